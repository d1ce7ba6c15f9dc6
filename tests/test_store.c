/* test_store.c — the daemon's SQLite store on real files: pragmas, every task call and its
 * state rules, listing and filters, session turns, agents/models upserts and residency
 * counters, group commit against a second connection, reopening, migrations (a hand-made
 * version-1 file brought to the current version, tasks.turns_dropped of version 2, one more
 * step through the framework, a failing step, a newer file refused) and files that are not
 * databases. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_internal.h"

typedef struct fixture {
    char dir[64];
    char path[128];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/nx-store-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/nexus.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    char file[160];
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal", "-ends"};
    for (size_t i = 0; i < 5; i++) {
        snprintf(file, sizeof file, "%s%s", f->path, suffixes[i]);
        unlink(file);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static nx_store_t *open_ok(const char *path)
{
    nx_err_t err = {0};
    nx_store_t *s = nx_store_open(path, &err);
    if (!s)
        fail_msg("nx_store_open: %s", err.msg);
    return s;
}

#define OK(call)                                                   \
    do {                                                           \
        nx_err_t err_ = {0};                                       \
        int rc_ = (call);                                          \
        if (rc_ != NX_OK)                                          \
            fail_msg("%s -> %s: %s", #call, nx_errname(rc_), err_.msg); \
    } while (0)
#define E (&err_)

/* One integer from SQL on a raw connection. */
static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static double query_real(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    double v = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return v;
}

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

static int64_t insert(nx_store_t *s, const char *agent, const char *input, const char *session)
{
    int64_t id = 0;
    nx_task_new_t t = {.agent = agent, .input = input, .session = session};
    OK(nx_store_task_insert(s, &t, &id, E));
    assert_true(id > 0);
    return id;
}

static void test_open_sets_pragmas(void **state)
{
    fixture_t *f = *state;
    nx_store_t *s = open_ok(f->path);
    assert_int_equal(nx_store_schema_version(s), (int)nx__store_migration_count);
    assert_int_equal(query_int(s->db, "PRAGMA synchronous"), 2); /* FULL */
    assert_int_equal(query_int(s->db, "PRAGMA foreign_keys"), 1);
    assert_true(query_int(s->db, "PRAGMA busy_timeout") > 0);
    assert_int_equal(query_int(s->db, "PRAGMA user_version"), nx_store_schema_version(s));
    nx_store_close(&s);
    nx_store_close(&s); /* safe twice */
    assert_null(s);
    sqlite3 *raw = raw_open(f->path); /* WAL is a property of the file */
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(raw);

    s = open_ok(":memory:"); /* for tests elsewhere: no file, no WAL, same API */
    assert_true(insert(s, "a", "b", NULL) == 1);
    nx_store_close(&s);
}

static void test_task_lifecycle(void **state)
{
    fixture_t *f = *state;
    nx_store_t *s = open_ok(f->path);
    int64_t a1 = insert(s, "alpha", "first", "sess");
    int64_t b1 = insert(s, "beta", "second", NULL);
    nx_task_new_t child = {.agent = "alpha", .input = "third", .parent = b1,
                           .client_id = "c-17", .params_json = "{\"max_tokens\":5}",
                           .route_json = "[\"beta\"]"};
    int64_t a2 = 0;
    OK(nx_store_task_insert(s, &child, &a2, E));
    assert_true(a1 < b1 && b1 < a2);

    nx_task_row_t row;
    OK(nx_store_task_get(s, a2, &row, E));
    assert_int_equal(row.status, NX_TASK_ACCEPTED);
    assert_string_equal(row.agent, "alpha");
    assert_string_equal(row.input, "third");
    assert_string_equal(row.client_id, "c-17");
    assert_string_equal(row.params_json, "{\"max_tokens\":5}");
    assert_string_equal(row.route_json, "[\"beta\"]");
    assert_int_equal(row.parent, b1);
    assert_null(row.output);
    assert_null(row.session);
    assert_true(row.created_at > 1.6e9 && row.started_at == 0 && row.finished_at == 0);
    nx_task_row_clear(&row);

    OK(nx_store_task_running(s, a1, E));
    nx_err_t err = {0};
    assert_int_equal(nx_store_task_running(s, a1, &err), NX_ESTATE);
    assert_non_null(strstr(err.msg, "running"));
    nx_task_timings_t t = {.queue_ms = 1.5, .swap_ms = 250.25, .ttft_ms = 40, .total_ms = 900};
    OK(nx_store_task_finish(s, a1, NX_TASK_DONE, "the answer", NULL, NULL, &t, 12, 34, E));
    assert_int_equal(nx_store_task_finish(s, a1, NX_TASK_FAILED, NULL, "internal", "x", NULL, 0,
                                          0, &err),
                     NX_ESTATE); /* a task finishes once */
    assert_non_null(strstr(err.msg, "done"));
    assert_int_equal(nx_store_task_running(s, a1, NULL), NX_ESTATE);
    OK(nx_store_task_finish(s, b1, NX_TASK_CANCELED, NULL, "canceled", "canceled by client",
                            NULL, 0, 0, E)); /* accepted -> canceled without running */

    OK(nx_store_task_get(s, a1, &row, E));
    assert_int_equal(row.status, NX_TASK_DONE);
    assert_string_equal(row.output, "the answer");
    assert_string_equal(row.session, "sess");
    assert_null(row.error_code);
    assert_true(row.timings.queue_ms == 1.5 && row.timings.swap_ms == 250.25);
    assert_true(row.timings.ttft_ms == 40 && row.timings.total_ms == 900);
    assert_int_equal(row.prompt_tokens, 12);
    assert_int_equal(row.completion_tokens, 34);
    assert_true(row.started_at >= row.created_at && row.finished_at >= row.started_at);
    assert_int_equal(row.turns_dropped, 0); /* none recorded: none left out */
    nx_task_row_clear(&row);
    /* the session turns left out of a prompt, recorded beside its end */
    OK(nx_store_task_turns_dropped(s, a1, 7, E));
    OK(nx_store_task_get(s, a1, &row, E));
    assert_int_equal(row.turns_dropped, 7);
    assert_string_equal(row.output, "the answer"); /* nothing else changed */
    nx_task_row_clear(&row);
    assert_int_equal(nx_store_task_turns_dropped(s, 999, 1, &err), NX_ENOTFOUND);
    assert_non_null(strstr(err.msg, "999"));
    OK(nx_store_task_get(s, b1, &row, E));
    assert_int_equal(row.status, NX_TASK_CANCELED);
    assert_string_equal(row.error_code, "canceled");
    assert_string_equal(row.error, "canceled by client");
    assert_true(row.timings.total_ms == 0 && row.started_at == 0);
    nx_task_row_clear(&row);

    /* wrong ids and values */
    assert_int_equal(nx_store_task_get(s, 999, &row, &err), NX_ENOTFOUND);
    assert_non_null(strstr(err.msg, "999"));
    assert_int_equal(nx_store_task_running(s, 999, NULL), NX_ENOTFOUND);
    assert_int_equal(nx_store_task_finish(s, 999, NX_TASK_DONE, "", NULL, NULL, NULL, 0, 0, NULL),
                     NX_ENOTFOUND);
    assert_int_equal(nx_store_task_finish(s, a2, NX_TASK_RUNNING, NULL, NULL, NULL, NULL, 0, 0,
                                          &err),
                     NX_EINVAL);
    nx_task_new_t orphan = {.agent = "alpha", .input = "x", .parent = 12345};
    int64_t id = 0;
    assert_int_equal(nx_store_task_insert(s, &orphan, &id, &err), NX_EINVAL); /* foreign key */
    assert_non_null(strstr(err.msg, "inserting a task"));
    assert_non_null(strstr(err.msg, f->path));
    nx_task_new_t no_input = {.agent = "alpha"};
    assert_int_equal(nx_store_task_insert(s, &no_input, &id, NULL), NX_EINVAL);

    /* unfinished: only a2 is left, oldest first */
    int64_t a3 = insert(s, "alpha", "fourth", NULL);
    OK(nx_store_task_running(s, a3, E));
    nx_task_row_t *rows;
    size_t n;
    OK(nx_store_tasks_unfinished(s, &rows, &n, E));
    assert_int_equal(n, 2);
    assert_int_equal(rows[0].id, a2);
    assert_int_equal(rows[1].id, a3);
    assert_int_equal(rows[1].status, NX_TASK_RUNNING);
    nx_task_rows_free(rows, n);

    /* lists: newest first, agent filter, limit (0 = all) */
    OK(nx_store_tasks(s, NULL, 0, &rows, &n, E));
    assert_int_equal(n, 4);
    assert_int_equal(rows[0].id, a3);
    assert_int_equal(rows[3].id, a1);
    nx_task_rows_free(rows, n);
    OK(nx_store_tasks(s, "alpha", 2, &rows, &n, E));
    assert_int_equal(n, 2);
    assert_int_equal(rows[0].id, a3);
    assert_int_equal(rows[1].id, a2);
    nx_task_rows_free(rows, n);
    OK(nx_store_tasks(s, "beta", 20, &rows, &n, E));
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].id, b1);
    nx_task_rows_free(rows, n);
    OK(nx_store_tasks(s, "nobody", 20, &rows, &n, E));
    assert_int_equal(n, 0);
    nx_task_rows_free(rows, n);

    OK(nx_store_task_finish(s, a2, NX_TASK_FAILED, NULL, "model_error", "no weights", NULL, 0, 0,
                            E));
    OK(nx_store_task_finish(s, a3, NX_TASK_DONE, "ok", NULL, NULL, NULL, 1, 1, E));
    OK(nx_store_tasks_unfinished(s, &rows, &n, E));
    assert_int_equal(n, 0);
    nx_task_rows_free(rows, n);
    assert_string_equal(nx_task_status_name(NX_TASK_CANCELED), "canceled");
    nx_store_close(&s);
}

static void test_utf8_and_nulls(void **state)
{
    fixture_t *f = *state;
    nx_store_t *s = open_ok(f->path);
    const char *text = "naïve café — 日本語テキスト, emoji 🦀🧪, e\xcc\x81 (combining), \"quotes' ;--";
    size_t big_len = 200000;
    char *big = malloc(big_len + 1);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)('a' + i % 26);
    big[big_len] = '\0';
    nx_task_new_t t = {.agent = "ägent", .input = text, .session = "séance 🗝"};
    int64_t id = 0;
    OK(nx_store_task_insert(s, &t, &id, E));
    OK(nx_store_task_finish(s, id, NX_TASK_DONE, big, NULL, NULL, NULL, 0, 0, E));
    int64_t empty = insert(s, "a", "", NULL); /* empty is not NULL */
    OK(nx_store_task_finish(s, empty, NX_TASK_DONE, "", NULL, NULL, NULL, 0, 0, E));
    OK(nx_store_message_add(s, "séance 🗝", "user", text, NULL, 0, E));
    nx_store_close(&s);

    s = open_ok(f->path);
    nx_task_row_t row;
    OK(nx_store_task_get(s, id, &row, E));
    assert_string_equal(row.agent, "ägent");
    assert_string_equal(row.input, text);
    assert_string_equal(row.session, "séance 🗝");
    assert_int_equal(strlen(row.output), big_len);
    assert_memory_equal(row.output, big, big_len);
    assert_null(row.client_id);
    assert_null(row.params_json);
    assert_null(row.route_json);
    assert_null(row.error);
    assert_int_equal(row.parent, 0);
    nx_task_row_clear(&row);
    OK(nx_store_task_get(s, empty, &row, E));
    assert_non_null(row.input);
    assert_string_equal(row.input, "");
    assert_string_equal(row.output, "");
    nx_task_row_clear(&row);
    nx_message_row_t *msgs;
    size_t n;
    OK(nx_store_messages(s, "séance 🗝", 0, &msgs, &n, E));
    assert_int_equal(n, 1);
    assert_string_equal(msgs[0].content, text);
    assert_null(msgs[0].agent);
    assert_int_equal(msgs[0].task, 0);
    nx_message_rows_free(msgs, n);
    assert_int_equal(query_int(s->db, "SELECT count(*) FROM messages WHERE task IS NULL"), 1);
    free(big);
    nx_store_close(&s);
}

/* Append `turns` turns to session: "qN" (user), in turn 2 also "tool2" (tool), "aN" (assistant). */
static void add_turns(nx_store_t *s, const char *session, int turns, int64_t task)
{
    char content[32];
    for (int i = 1; i <= turns; i++) {
        snprintf(content, sizeof content, "q%d", i);
        OK(nx_store_message_add(s, session, "user", content, NULL, task, E));
        snprintf(content, sizeof content, "tool%d", i);
        if (i == 2) /* a turn may hold more than two messages */
            OK(nx_store_message_add(s, session, "tool", content, "helper", task, E));
        snprintf(content, sizeof content, "a%d", i);
        OK(nx_store_message_add(s, session, "assistant", content, "helper", task, E));
    }
}

static void expect_contents(nx_store_t *s, const char *session, uint32_t turns,
                            const char *const *want, size_t want_count)
{
    nx_message_row_t *rows;
    size_t n;
    OK(nx_store_messages(s, session, turns, &rows, &n, E));
    assert_int_equal(n, want_count);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(rows[i].content, want[i]);
    for (size_t i = 1; i < n; i++)
        assert_true(rows[i].at >= rows[i - 1].at);
    nx_message_rows_free(rows, n);
}

static void test_messages_and_turns(void **state)
{
    fixture_t *f = *state;
    nx_store_t *s = open_ok(f->path);
    int64_t task = insert(s, "helper", "q", "chat");
    OK(nx_store_message_add(s, "chat", "system", "be brief", NULL, 0, E));
    add_turns(s, "chat", 4, task);
    add_turns(s, "other", 1, 0);
    assert_true(nx_store_session_exists(s, "chat"));
    assert_true(nx_store_session_exists(s, "other"));
    assert_false(nx_store_session_exists(s, "nope"));
    assert_false(nx_store_session_exists(s, NULL));

    const char *all[] = {"be brief", "q1", "a1", "q2", "tool2", "a2", "q3", "a3", "q4", "a4"};
    expect_contents(s, "chat", 0, all, 10);
    expect_contents(s, "chat", 4, all + 1, 9); /* exactly 4 turns: the system line is before */
    expect_contents(s, "chat", 99, all, 10);   /* fewer turns than asked: everything */
    expect_contents(s, "chat", 3, all + 3, 7);
    expect_contents(s, "chat", 1, all + 8, 2);
    const char *other[] = {"q1", "a1"};
    expect_contents(s, "other", 0, other, 2);
    expect_contents(s, "missing", 3, NULL, 0);

    OK(nx_store_message_add(s, "chat", "user", "q5", NULL, task, E)); /* reply not yet there */
    const char *last[] = {"q4", "a4", "q5"};
    expect_contents(s, "chat", 2, last, 3);

    nx_message_row_t *rows;
    size_t n;
    OK(nx_store_messages(s, "chat", 1, &rows, &n, E));
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].role, "user");
    assert_int_equal(rows[0].task, task);
    assert_true(rows[0].at > 1.6e9);
    nx_message_rows_free(rows, n);

    nx_err_t err = {0};
    assert_int_equal(nx_store_message_add(s, "chat", "user", "x", NULL, 4242, &err), NX_EINVAL);
    assert_non_null(strstr(err.msg, "adding a session message"));
    assert_int_equal(nx_store_message_add(s, "chat", "user", NULL, NULL, 0, NULL), NX_EINVAL);
    nx_store_close(&s);
}

static void test_agents_models_residency(void **state)
{
    fixture_t *f = *state;
    nx_store_t *s = open_ok(f->path);
    OK(nx_store_put_agent(s, "writer", "name: writer\n", "aaaa", "qwen3", E));
    double first = query_real(s->db, "SELECT updated_at FROM agents WHERE name = 'writer'");
    OK(nx_store_put_agent(s, "writer", "name: writer\n", "aaaa", "qwen3", E));
    assert_true(query_real(s->db, "SELECT updated_at FROM agents") == first); /* unchanged */
    usleep(2000);
    OK(nx_store_put_agent(s, "writer", "name: writer\nx: 1\n", "bbbb", "llama", E));
    assert_true(query_real(s->db, "SELECT updated_at FROM agents") > first);
    assert_int_equal(query_int(s->db, "SELECT count(*) FROM agents WHERE hash = 'bbbb' AND "
                                      "model = 'llama' AND definition LIKE '%x: 1%'"),
                     1);
    assert_int_equal(nx_store_put_agent(s, "x", NULL, "h", "m", NULL), NX_EINVAL);

    OK(nx_store_put_model(s, "qwen3", "/models/qwen3", 1000, E));
    OK(nx_store_put_model(s, "qwen3", "/models/qwen3-new", 2000, E));
    assert_int_equal(query_int(s->db, "SELECT bytes FROM models WHERE name = 'qwen3' AND "
                                      "path = '/models/qwen3-new' AND loads = 0"),
                     2000);
    OK(nx_store_residency_event(s, "qwen3", "loading", 0, 0, "task", E));
    assert_true(query_real(s->db, "SELECT last_used_at FROM models WHERE name='qwen3'") > 1.6e9);
    OK(nx_store_residency_event(s, "qwen3", "resident", 2000, 812.5, "task", E));
    OK(nx_store_residency_event(s, "qwen3", "evicting", 2000, 0, "pressure", E));
    OK(nx_store_residency_event(s, "qwen3", "host", 2000, 31.0, "pressure", E));
    OK(nx_store_residency_event(s, "qwen3", "resident", 2000, 95.25, NULL, E));
    assert_int_equal(query_int(s->db, "SELECT loads FROM models WHERE name = 'qwen3'"), 2);
    assert_true(query_real(s->db, "SELECT last_swap_ms FROM models WHERE name='qwen3'") == 95.25);
    assert_int_equal(query_int(s->db, "SELECT count(*) FROM residency_events WHERE model = "
                                      "'qwen3'"),
                     5);
    assert_int_equal(query_int(s->db, "SELECT count(*) FROM residency_events WHERE reason IS "
                                      "NULL AND event = 'resident' AND ms = 95.25"),
                     1);
    /* the path set by put_model survives the counters */
    assert_int_equal(query_int(s->db, "SELECT count(*) FROM models WHERE path = "
                                      "'/models/qwen3-new'"),
                     1);
    /* an event for a model not stored yet creates its row */
    OK(nx_store_residency_event(s, "stranger", "resident", 77, 5, "request", E));
    assert_int_equal(query_int(s->db, "SELECT loads * 1000 + bytes FROM models WHERE name = "
                                      "'stranger' AND path IS NULL"),
                     1077);
    nx_err_t err = {0};
    assert_int_equal(nx_store_residency_event(s, "qwen3", "exploded", 0, 0, NULL, &err),
                     NX_EINVAL);
    assert_non_null(strstr(err.msg, "exploded"));
    assert_int_equal(query_int(s->db, "SELECT count(*) FROM residency_events"), 6);
    nx_store_close(&s);
}

static int64_t count_tasks_raw(const char *path)
{
    sqlite3 *raw = raw_open(path);
    int64_t n = query_int(raw, "SELECT count(*) FROM tasks");
    sqlite3_close(raw);
    return n;
}

static void test_group_commit(void **state)
{
    fixture_t *f = *state;
    nx_store_t *s = open_ok(f->path);
    OK(nx_store_begin(s, E));
    nx_err_t err = {0};
    assert_int_equal(nx_store_begin(s, &err), NX_ESTATE);
    int64_t ids[5];
    for (int i = 0; i < 5; i++)
        ids[i] = insert(s, "g", "grouped", NULL);
    OK(nx_store_task_running(s, ids[0], E));
    OK(nx_store_message_add(s, "gs", "user", "hi", NULL, ids[0], E));
    /* a failing call inside the group fails alone; the group goes on */
    assert_int_equal(nx_store_task_running(s, ids[0], NULL), NX_ESTATE);
    nx_task_new_t orphan = {.agent = "g", .input = "x", .parent = 999};
    assert_int_equal(nx_store_task_insert(s, &orphan, NULL, NULL), NX_EINVAL);
    nx_task_row_t row;
    OK(nx_store_task_get(s, ids[4], &row, E)); /* visible to its own connection */
    nx_task_row_clear(&row);
    assert_int_equal(count_tasks_raw(f->path), 0); /* not to others before commit */
    OK(nx_store_commit(s, E));
    assert_int_equal(count_tasks_raw(f->path), 5);
    assert_int_equal(nx_store_commit(s, &err), NX_ESTATE);
    assert_int_equal(nx_store_rollback(s), NX_ESTATE);

    OK(nx_store_begin(s, E));
    int64_t gone = insert(s, "g", "rolled back", NULL);
    OK(nx_store_task_finish(s, ids[0], NX_TASK_DONE, "x", NULL, NULL, NULL, 0, 0, E));
    OK(nx_store_residency_event(s, "m", "resident", 1, 1, NULL, E));
    assert_int_equal(nx_store_rollback(s), NX_OK);
    assert_int_equal(nx_store_task_get(s, gone, &row, NULL), NX_ENOTFOUND);
    OK(nx_store_task_get(s, ids[0], &row, E));
    assert_int_equal(row.status, NX_TASK_RUNNING); /* the finish was rolled back too */
    nx_task_row_clear(&row);
    assert_int_equal(query_int(s->db, "SELECT count(*) FROM residency_events"), 0);
    assert_int_equal(count_tasks_raw(f->path), 5);

    /* outside begin/commit every call commits on its own */
    insert(s, "g", "autocommit", NULL);
    assert_int_equal(count_tasks_raw(f->path), 6);
    /* SQLite rolls a transaction back by itself on some errors (disk full, I/O): later calls
     * must not quietly autocommit, and the commit must say the group is lost */
    OK(nx_store_begin(s, E));
    insert(s, "g", "lost with its group", NULL);
    raw_exec(s->db, "ROLLBACK"); /* what SQLite does on SQLITE_FULL */
    int64_t id = 0;
    nx_task_new_t late = {.agent = "g", .input = "after the rollback"};
    assert_int_equal(nx_store_task_insert(s, &late, &id, &err), NX_EIO);
    assert_non_null(strstr(err.msg, "rolled back"));
    assert_int_equal(nx_store_commit(s, &err), NX_EIO);
    assert_non_null(strstr(err.msg, "nothing in it is stored"));
    assert_int_equal(count_tasks_raw(f->path), 6);
    OK(nx_store_begin(s, E)); /* and the store is usable again */
    insert(s, "g", "next group", NULL);
    OK(nx_store_commit(s, E));
    assert_int_equal(count_tasks_raw(f->path), 7);

    /* an open group is discarded at close: it was never acknowledged */
    OK(nx_store_begin(s, E));
    insert(s, "g", "never committed", NULL);
    nx_store_close(&s);
    assert_int_equal(count_tasks_raw(f->path), 7);
}

static void test_reopen_keeps_everything(void **state)
{
    fixture_t *f = *state;
    nx_store_t *s = open_ok(f->path);
    OK(nx_store_put_agent(s, "a", "def", "h", "m", E));
    OK(nx_store_put_model(s, "m", "/p", 5, E));
    OK(nx_store_residency_event(s, "m", "resident", 5, 7, "task", E));
    int64_t id = insert(s, "a", "in", "s");
    OK(nx_store_task_finish(s, id, NX_TASK_DONE, "out", NULL, NULL, NULL, 3, 4, E));
    int64_t open_id = insert(s, "a", "left over", NULL);
    OK(nx_store_message_add(s, "s", "user", "in", NULL, id, E));
    nx_store_close(&s);

    s = open_ok(f->path);
    nx_task_row_t row;
    OK(nx_store_task_get(s, id, &row, E));
    assert_string_equal(row.output, "out");
    assert_int_equal(row.completion_tokens, 4);
    nx_task_row_clear(&row);
    nx_task_row_t *rows;
    size_t n;
    OK(nx_store_tasks_unfinished(s, &rows, &n, E));
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].id, open_id);
    nx_task_rows_free(rows, n);
    assert_true(nx_store_session_exists(s, "s"));
    assert_int_equal(query_int(s->db, "SELECT loads FROM models WHERE name = 'm'"), 1);
    assert_int_equal(query_int(s->db, "SELECT count(*) FROM agents"), 1);
    assert_true(insert(s, "a", "next", NULL) > open_id); /* ids never reused */
    nx_store_close(&s);
}

/* The version-1 shape written out by hand, as an older nexusd would have left it. */
static void make_v1_file(const char *path)
{
    sqlite3 *raw = raw_open(path);
    raw_exec(raw,
             "CREATE TABLE agents (name TEXT PRIMARY KEY NOT NULL, definition TEXT NOT NULL,"
             " hash TEXT NOT NULL, model TEXT NOT NULL, updated_at REAL NOT NULL);"
             "CREATE TABLE models (name TEXT PRIMARY KEY NOT NULL, path TEXT, bytes INTEGER NOT"
             " NULL DEFAULT 0, loads INTEGER NOT NULL DEFAULT 0, last_swap_ms REAL,"
             " last_used_at REAL);"
             "CREATE TABLE tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT, agent"
             " TEXT NOT NULL, session TEXT, input TEXT NOT NULL, output TEXT, status TEXT NOT"
             " NULL, error_code TEXT, error TEXT, params_json TEXT, route_json TEXT, parent"
             " INTEGER REFERENCES tasks(id), queue_ms REAL, swap_ms REAL, ttft_ms REAL,"
             " total_ms REAL, prompt_tokens INTEGER, completion_tokens INTEGER, created_at REAL"
             " NOT NULL, started_at REAL, finished_at REAL);"
             "CREATE INDEX tasks_agent_id ON tasks(agent, id);"
             "CREATE INDEX tasks_status ON tasks(status);"
             "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT"
             " NULL, role TEXT NOT NULL, content TEXT NOT NULL, agent TEXT, task INTEGER"
             " REFERENCES tasks(id), at REAL NOT NULL);"
             "CREATE INDEX messages_session_id ON messages(session, id);"
             "CREATE TABLE residency_events (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT"
             " NOT NULL, event TEXT NOT NULL, bytes INTEGER NOT NULL, ms REAL, reason TEXT,"
             " at REAL NOT NULL);"
             "INSERT INTO tasks (agent, input, output, status, created_at, finished_at)"
             " VALUES ('old', 'old input', 'old output', 'done', 1700000000.5, 1700000001.25);"
             "INSERT INTO tasks (agent, input, status, created_at)"
             " VALUES ('old', 'never ran', 'accepted', 1700000002.0);"
             "INSERT INTO messages (session, role, content, task, at)"
             " VALUES ('olds', 'user', 'old input', 1, 1700000000.5);"
             "PRAGMA user_version = 1;");
    sqlite3_close(raw);
}

static void test_migrate_handmade_v1(void **state)
{
    fixture_t *f = *state;
    make_v1_file(f->path);
    nx_store_t *s = open_ok(f->path);
    assert_int_equal(nx_store_schema_version(s), (int)nx__store_migration_count);
    nx_task_row_t row;
    OK(nx_store_task_get(s, 1, &row, E));
    assert_string_equal(row.output, "old output");
    assert_true(row.created_at == 1700000000.5 && row.finished_at == 1700000001.25);
    assert_int_equal(row.turns_dropped, 0); /* version 2's column, 0 for rows from before it */
    nx_task_row_clear(&row);
    OK(nx_store_task_turns_dropped(s, 1, 3, E));
    OK(nx_store_task_get(s, 1, &row, E));
    assert_int_equal(row.turns_dropped, 3);
    nx_task_row_clear(&row);
    nx_task_row_t *rows;
    size_t n;
    OK(nx_store_tasks_unfinished(s, &rows, &n, E));
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].input, "never ran");
    nx_task_rows_free(rows, n);
    assert_true(nx_store_session_exists(s, "olds"));
    assert_int_equal(insert(s, "new", "after migration", NULL), 3);
    nx_store_close(&s);

    /* an empty database (user_version 0, no tables) migrates from scratch */
    char empty[160];
    snprintf(empty, sizeof empty, "%s/empty.db", f->dir);
    sqlite3 *raw = raw_open(empty);
    raw_exec(raw, "PRAGMA user_version = 0; CREATE TABLE unrelated (x);");
    sqlite3_close(raw);
    s = open_ok(empty);
    assert_int_equal(nx_store_schema_version(s), (int)nx__store_migration_count);
    assert_int_equal(query_int(s->db, "SELECT count(*) FROM unrelated"), 0); /* kept */
    nx_store_close(&s);
    unlink(empty);
    snprintf(empty, sizeof empty, "%s/empty.db-wal", f->dir);
    unlink(empty);
    snprintf(empty, sizeof empty, "%s/empty.db-shm", f->dir);
    unlink(empty);
}

/* The framework with one more version appended after this build's last (N), as the next
 * schema change will do it: a failing step leaves nothing behind, a good one applies over
 * the real steps from a version-1 file, and this build then refuses the newer file. */
static void test_migration_framework_next(void **state)
{
    fixture_t *f = *state;
    make_v1_file(f->path);
    size_t n = nx__store_migration_count;
    int next_version = (int)n + 1;
    nx__migration_t list[16];
    assert_true(n + 1 <= sizeof list / sizeof list[0]);
    memcpy(list, nx__store_migrations, n * sizeof *list);
    list[n] = (nx__migration_t){next_version, "add two columns, badly",
                                "ALTER TABLE tasks ADD COLUMN half INTEGER; THIS IS NOT SQL;"};
    sqlite3 *raw = raw_open(f->path);
    int version = -1;
    nx_err_t err = {0};
    char text[96];
    assert_int_equal(nx__store_migrate(raw, f->path, list, n + 1, &version, &err), NX_EIO);
    snprintf(text, sizeof text, "migrating to schema version %d", next_version);
    assert_non_null(strstr(err.msg, text));
    /* the failed step left nothing behind; the real steps before it were applied */
    assert_int_equal(query_int(raw, "PRAGMA user_version"), (int)n);
    assert_int_equal(query_int(raw, "SELECT count(*) FROM pragma_table_info('tasks') WHERE "
                                    "name = 'half'"),
                     0);

    list[n] = (nx__migration_t){next_version, "add tasks.priority",
                                "ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 3;"
                                "CREATE INDEX tasks_priority ON tasks(priority);"};
    OK(nx__store_migrate(raw, f->path, list, n + 1, &version, E));
    assert_int_equal(version, next_version);
    assert_int_equal(query_int(raw, "PRAGMA user_version"), next_version);
    assert_int_equal(query_int(raw, "SELECT sum(priority) FROM tasks"), 6); /* old rows: default */
    assert_int_equal(query_int(raw, "SELECT count(*) FROM tasks WHERE output = 'old output'"), 1);
    OK(nx__store_migrate(raw, f->path, list, n + 1, &version, E)); /* idempotent */
    assert_int_equal(version, next_version);
    list[n].version = next_version + 1; /* a gap */
    assert_int_equal(nx__store_migrate(raw, f->path, list, n + 1, &version, NULL), NX_EINVAL);
    sqlite3_close(raw);

    /* this build knows only version n: the newer file is refused, naming both */
    nx_store_t *s = nx_store_open(f->path, &err);
    assert_null(s);
    assert_int_equal(err.code, NX_ENOTSUP);
    snprintf(text, sizeof text, "schema version %d", next_version);
    assert_non_null(strstr(err.msg, text));
    snprintf(text, sizeof text, "the %zu this build knows", n);
    assert_non_null(strstr(err.msg, text));
    assert_non_null(strstr(err.msg, f->path));
}

static void test_newer_version_refused(void **state)
{
    fixture_t *f = *state;
    sqlite3 *raw = raw_open(f->path);
    raw_exec(raw, "CREATE TABLE future (x); PRAGMA user_version = 7;");
    sqlite3_close(raw);
    nx_err_t err = {0};
    assert_null(nx_store_open(f->path, &err));
    assert_int_equal(err.code, NX_ENOTSUP);
    assert_non_null(strstr(err.msg, "7"));
    char known[64];
    snprintf(known, sizeof known, "the %zu this build knows", nx__store_migration_count);
    assert_non_null(strstr(err.msg, known));
    raw = raw_open(f->path); /* untouched: still version 7, still a rollback journal */
    assert_int_equal(query_int(raw, "PRAGMA user_version"), 7);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "delete");
    sqlite3_finalize(st);
    sqlite3_close(raw);
}

static void test_not_a_database(void **state)
{
    fixture_t *f = *state;
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 300; i++)
        fputs("this is a YAML file, not a database\n", fp);
    fclose(fp);
    nx_err_t err = {0};
    assert_null(nx_store_open(f->path, &err));
    assert_int_equal(err.code, NX_EFORMAT);
    assert_non_null(strstr(err.msg, f->path));
    assert_non_null(strstr(err.msg, "not a database"));
    fp = fopen(f->path, "r"); /* not overwritten */
    char line[64];
    assert_non_null(fgets(line, sizeof line, fp));
    assert_string_equal(line, "this is a YAML file, not a database\n");
    fclose(fp);

    char nowhere[200];
    snprintf(nowhere, sizeof nowhere, "%s/no/such/dir/nexus.db", f->dir);
    assert_null(nx_store_open(nowhere, &err));
    assert_int_equal(err.code, NX_EIO);
    assert_non_null(strstr(err.msg, nowhere));
    assert_null(nx_store_open(NULL, &err));
    assert_int_equal(err.code, NX_EINVAL);
}

/* A full database is NX_ENOSPC naming the cause, not a bug's NX_EIO. SQLite's own size cap
 * (max_page_count on the store's real connection) makes SQLite answer SQLITE_FULL exactly as
 * a full disk does. Writes work again once there is room, and nothing committed is lost. */
static void test_full_database(void **state)
{
    fixture_t *f = *state;
    nx_store_t *s = open_ok(f->path);
    int64_t kept = insert(s, "alpha", "kept", NULL);
    int64_t pages = query_int(s->db, "PRAGMA page_count");
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)pages);
    assert_int_equal(sqlite3_exec(s->db, sql, NULL, NULL, NULL), SQLITE_OK);

    static char big[64 * 1024];
    memset(big, 'x', sizeof big - 1);
    nx_task_new_t task = {.agent = "alpha", .input = big};
    nx_err_t err = {0};
    int64_t id = 0;
    assert_int_equal(nx_store_task_insert(s, &task, &id, &err), NX_ENOSPC);
    assert_non_null(strstr(err.msg, "full"));
    assert_non_null(strstr(err.msg, f->path));
    /* inside a group transaction too, and the group can be rolled back and begun again */
    OK(nx_store_begin(s, E));
    assert_int_equal(nx_store_task_finish(s, kept, NX_TASK_DONE, big, NULL, NULL, NULL, 0, 0,
                                          &err),
                     NX_ENOSPC);
    nx_store_rollback(s);

    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)pages * 1000);
    assert_int_equal(sqlite3_exec(s->db, sql, NULL, NULL, NULL), SQLITE_OK);
    OK(nx_store_task_insert(s, &task, &id, E)); /* room again */
    nx_task_row_t row;
    OK(nx_store_task_get(s, kept, &row, E));
    assert_string_equal(row.input, "kept");
    assert_int_equal(row.status, NX_TASK_ACCEPTED);
    nx_task_row_clear(&row);
    nx_store_close(&s);
}

/* Task ends kept aside in <db>-ends: they survive a reopen, are stored by a flush (a task
 * already final is left as it is) and are gone from the file afterwards. */
static void test_task_ends_kept_aside(void **state)
{
    fixture_t *f = *state;
    nx_store_t *s = open_ok(f->path);
    int64_t lost = insert(s, "alpha", "its end was not stored", NULL);
    int64_t done = insert(s, "alpha", "finished", NULL);
    OK(nx_store_task_finish(s, done, NX_TASK_DONE, "out", NULL, NULL, NULL, 1, 1, E));

    nx_err_t err = {0};
    nx_store_ends_t *ends = nx_store_ends_open(f->path, &err);
    assert_non_null(ends);
    assert_int_equal(nx_store_ends_count(ends), 0);
    OK(nx_store_ends_add(ends, lost, "storage_full", "the disk was full", E));
    OK(nx_store_ends_add(ends, done, "storage_full", "late word on a finished task", E));
    OK(nx_store_ends_add(ends, lost, "storage_full", "the disk holding it was full", E));
    assert_int_equal(nx_store_ends_count(ends), 2); /* one slot per task */
    nx_store_ends_close(&ends);
    assert_null(ends);

    ends = nx_store_ends_open(f->path, &err); /* as the next start finds it */
    assert_non_null(ends);
    assert_int_equal(nx_store_ends_count(ends), 2);
    const nx_store_end_t *end = nx_store_ends_find(ends, lost);
    assert_non_null(end);
    assert_string_equal(end->message, "the disk holding it was full");
    assert_null(nx_store_ends_find(ends, 12345));
    OK(nx_store_ends_flush(ends, s, E));
    assert_int_equal(nx_store_ends_count(ends), 0);
    nx_store_ends_close(&ends);

    nx_task_row_t row;
    OK(nx_store_task_get(s, lost, &row, E));
    assert_int_equal(row.status, NX_TASK_FAILED);
    assert_string_equal(row.error_code, "storage_full");
    assert_string_equal(row.error, "the disk holding it was full");
    nx_task_row_clear(&row);
    OK(nx_store_task_get(s, done, &row, E));
    assert_int_equal(row.status, NX_TASK_DONE);
    assert_string_equal(row.output, "out");
    nx_task_row_clear(&row);

    ends = nx_store_ends_open(f->path, &err);
    assert_int_equal(nx_store_ends_count(ends), 0); /* the file forgot them too */
    nx_store_ends_close(&ends);
    nx_store_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_sets_pragmas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_task_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_utf8_and_nulls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_messages_and_turns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agents_models_residency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_handmade_v1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_framework_next, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_version_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_task_ends_kept_aside, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
