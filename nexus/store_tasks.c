/* store_tasks.c — tasks (insert, running, finish once, get, list, unfinished) and session
 * messages (append, last N turns, exists) over the statement cache of store.c. A value the
 * database holds as NULL reads back as NULL (text) or 0 (numbers and times).
 */
#include "store_internal.h"

#include <stdlib.h>
#include <string.h>

static const char *const status_names[] = {
    [NX_TASK_ACCEPTED] = "accepted", [NX_TASK_RUNNING] = "running", [NX_TASK_DONE] = "done",
    [NX_TASK_FAILED] = "failed",     [NX_TASK_CANCELED] = "canceled",
};
#define STATUS_COUNT (sizeof status_names / sizeof status_names[0])

const char *nx_task_status_name(nx_task_status_t s)
{
    return (unsigned)s < STATUS_COUNT ? status_names[s] : "unknown";
}

static bool status_parse(const unsigned char *text, nx_task_status_t *out)
{
    for (size_t i = 0; text && i < STATUS_COUNT; i++)
        if (strcmp((const char *)text, status_names[i]) == 0) {
            *out = (nx_task_status_t)i;
            return true;
        }
    return false;
}

static int invalid(const nx_store_t *self, nx_err_t *err, const char *what)
{
    return nx_err_set(err, NX_EINVAL, "store '%s': %s", self->path, what);
}

/* --- writes ------------------------------------------------------------------------------ */

int nx_store_task_insert(nx_store_t *self, const nx_task_new_t *task, int64_t *id_out,
                         nx_err_t *err)
{
    if (!task || !task->agent || !task->input)
        return invalid(self, err, "inserting a task: agent and input are required (got NULL)");
    if (task->parent < 0)
        return invalid(self, err, "inserting a task: parent must be a task id or 0");
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, NX__ST_TASK_INSERT, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, task->client_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, task->agent, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, task->session, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, task->input, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, task->params_json, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, task->route_json, -1, SQLITE_STATIC);
    if (task->parent > 0)
        sqlite3_bind_int64(st, 7, task->parent);
    sqlite3_bind_double(st, 8, nx__store_now());
    rc = nx__store_step_done(self, st, NX__ST_TASK_INSERT, err);
    if (rc)
        return rc;
    if (id_out)
        *id_out = sqlite3_last_insert_rowid(self->db);
    return NX_OK;
}

/* An UPDATE guarded by the task's status changed nothing: say whether the task is missing
 * (NX_ENOTFOUND) or in the wrong state (NX_ESTATE). */
static int why_unchanged(nx_store_t *self, int64_t id, const char *action, nx_err_t *err)
{
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, NX__ST_TASK_STATUS, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        char status[32];
        const unsigned char *text = sqlite3_column_text(st, 0);
        strncpy(status, text ? (const char *)text : "?", sizeof status - 1);
        status[sizeof status - 1] = '\0';
        nx__store_done(st);
        return nx_err_set(err, NX_ESTATE, "store '%s': %s task %lld: it is already %s",
                          self->path, action, (long long)id, status);
    }
    nx__store_done(st);
    if (rc == SQLITE_DONE)
        return nx_err_set(err, NX_ENOTFOUND, "store '%s': %s task %lld: no such task",
                          self->path, action, (long long)id);
    return nx__store_sqlerr(self->db, self->path, rc, nx__store_purpose(NX__ST_TASK_STATUS), err);
}

int nx_store_task_running(nx_store_t *self, int64_t id, nx_err_t *err)
{
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, NX__ST_TASK_RUNNING, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_double(st, 2, nx__store_now());
    rc = nx__store_step_done(self, st, NX__ST_TASK_RUNNING, err);
    if (rc)
        return rc;
    return sqlite3_changes(self->db) ? NX_OK : why_unchanged(self, id, "marking running", err);
}

int nx_store_task_finish(nx_store_t *self, int64_t id, nx_task_status_t status,
                         const char *output, const char *error_code, const char *error,
                         const nx_task_timings_t *timings, uint32_t prompt_tokens,
                         uint32_t completion_tokens, nx_err_t *err)
{
    if (status != NX_TASK_DONE && status != NX_TASK_FAILED && status != NX_TASK_CANCELED)
        return nx_err_set(err, NX_EINVAL,
                          "store '%s': finishing task %lld: status '%s' is not final (done, "
                          "failed or canceled)",
                          self->path, (long long)id, nx_task_status_name(status));
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, NX__ST_TASK_FINISH, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, status_names[status], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, output, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, error_code, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, error, -1, SQLITE_STATIC);
    if (timings) {
        sqlite3_bind_double(st, 6, timings->queue_ms);
        sqlite3_bind_double(st, 7, timings->swap_ms);
        sqlite3_bind_double(st, 8, timings->ttft_ms);
        sqlite3_bind_double(st, 9, timings->total_ms);
    }
    sqlite3_bind_int64(st, 10, prompt_tokens);
    sqlite3_bind_int64(st, 11, completion_tokens);
    sqlite3_bind_double(st, 12, nx__store_now());
    rc = nx__store_step_done(self, st, NX__ST_TASK_FINISH, err);
    if (rc)
        return rc;
    return sqlite3_changes(self->db) ? NX_OK : why_unchanged(self, id, "finishing", err);
}

int nx_store_task_turns_dropped(nx_store_t *self, int64_t id, uint32_t turns, nx_err_t *err)
{
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, NX__ST_TASK_TURNS_DROPPED, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, turns);
    rc = nx__store_step_done(self, st, NX__ST_TASK_TURNS_DROPPED, err);
    if (rc)
        return rc;
    return sqlite3_changes(self->db)
               ? NX_OK
               : nx_err_set(err, NX_ENOTFOUND, "store '%s': recording the turns left out of "
                            "task %lld: no such task", self->path, (long long)id);
}

/* --- reading tasks ----------------------------------------------------------------------- */

void nx_task_row_clear(nx_task_row_t *row)
{
    if (!row)
        return;
    free(row->agent);
    free(row->input);
    free(row->output);
    free(row->session);
    free(row->error_code);
    free(row->error);
    free(row->params_json);
    free(row->route_json);
    free(row->client_id);
    memset(row, 0, sizeof *row);
}

void nx_task_rows_free(nx_task_row_t *rows, size_t count)
{
    for (size_t i = 0; rows && i < count; i++)
        nx_task_row_clear(&rows[i]);
    free(rows);
}

/* Fill *row from the current result row of an NX__TASK_SELECT statement. */
static int read_task(nx_store_t *self, sqlite3_stmt *st, nx_task_row_t *row, nx_err_t *err)
{
    bool ok = true;
    memset(row, 0, sizeof *row);
    row->id = sqlite3_column_int64(st, 0);
    row->agent = nx__store_dup(sqlite3_column_text(st, 1), &ok);
    row->input = nx__store_dup(sqlite3_column_text(st, 2), &ok);
    row->output = nx__store_dup(sqlite3_column_text(st, 3), &ok);
    row->session = nx__store_dup(sqlite3_column_text(st, 4), &ok);
    row->error_code = nx__store_dup(sqlite3_column_text(st, 5), &ok);
    row->error = nx__store_dup(sqlite3_column_text(st, 6), &ok);
    row->params_json = nx__store_dup(sqlite3_column_text(st, 7), &ok);
    row->route_json = nx__store_dup(sqlite3_column_text(st, 8), &ok);
    row->client_id = nx__store_dup(sqlite3_column_text(st, 9), &ok);
    row->parent = sqlite3_column_int64(st, 10);
    bool known = status_parse(sqlite3_column_text(st, 11), &row->status);
    row->timings.queue_ms = sqlite3_column_double(st, 12);
    row->timings.swap_ms = sqlite3_column_double(st, 13);
    row->timings.ttft_ms = sqlite3_column_double(st, 14);
    row->timings.total_ms = sqlite3_column_double(st, 15);
    row->prompt_tokens = (uint32_t)sqlite3_column_int64(st, 16);
    row->completion_tokens = (uint32_t)sqlite3_column_int64(st, 17);
    row->created_at = sqlite3_column_double(st, 18);
    row->started_at = sqlite3_column_double(st, 19);
    row->finished_at = sqlite3_column_double(st, 20);
    row->turns_dropped = (uint32_t)sqlite3_column_int64(st, 21);
    int rc = NX_OK;
    if (!ok)
        rc = nx_err_set(err, NX_ENOMEM, "store '%s': out of memory reading task %lld",
                        self->path, (long long)row->id);
    else if (!known)
        rc = nx_err_set(err, NX_EFORMAT, "store '%s': task %lld has an unknown status '%s'",
                        self->path, (long long)row->id, sqlite3_column_text(st, 11));
    if (rc)
        nx_task_row_clear(row);
    return rc;
}

/* Step st to the end, appending each row to a growing array. Resets st. */
static int read_tasks(nx_store_t *self, sqlite3_stmt *st, int id, nx_task_row_t **rows_out,
                      size_t *count_out, nx_err_t *err)
{
    nx_task_row_t *rows = NULL;
    size_t count = 0, cap = 0;
    int rc = NX_OK, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            size_t new_cap = cap ? cap * 2 : 16;
            nx_task_row_t *grown = realloc(rows, new_cap * sizeof *rows);
            if (!grown) {
                rc = nx_err_set(err, NX_ENOMEM, "store '%s': %s: out of memory", self->path,
                                nx__store_purpose(id));
                goto out_free;
            }
            rows = grown;
            cap = new_cap;
        }
        rc = read_task(self, st, &rows[count], err);
        if (rc)
            goto out_free;
        count++;
    }
    if (step != SQLITE_DONE) {
        rc = nx__store_sqlerr(self->db, self->path, step, nx__store_purpose(id), err);
        goto out_free;
    }
    nx__store_done(st);
    *rows_out = rows;
    *count_out = count;
    return NX_OK;

out_free:
    nx__store_done(st);
    nx_task_rows_free(rows, count);
    return rc;
}

int nx_store_tasks(nx_store_t *self, const char *agent, uint32_t limit, nx_task_row_t **rows_out,
                   size_t *count_out, nx_err_t *err)
{
    *rows_out = NULL;
    *count_out = 0;
    int id = agent ? NX__ST_TASKS_AGENT : NX__ST_TASKS_ALL;
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, id, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, limit ? (sqlite3_int64)limit : -1); /* 0: no limit */
    if (agent)
        sqlite3_bind_text(st, 2, agent, -1, SQLITE_STATIC);
    return read_tasks(self, st, id, rows_out, count_out, err);
}

int nx_store_task_get(nx_store_t *self, int64_t id, nx_task_row_t *row_out, nx_err_t *err)
{
    memset(row_out, 0, sizeof *row_out);
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, NX__ST_TASK_GET, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        rc = read_task(self, st, row_out, err);
    else if (step == SQLITE_DONE)
        rc = nx_err_set(err, NX_ENOTFOUND, "store '%s': task %lld: no such task", self->path,
                        (long long)id);
    else
        rc = nx__store_sqlerr(self->db, self->path, step, nx__store_purpose(NX__ST_TASK_GET), err);
    nx__store_done(st);
    return rc;
}

int nx_store_tasks_unfinished(nx_store_t *self, nx_task_row_t **rows_out, size_t *count_out,
                              nx_err_t *err)
{
    *rows_out = NULL;
    *count_out = 0;
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, NX__ST_TASKS_UNFINISHED, &st, err);
    if (rc)
        return rc;
    return read_tasks(self, st, NX__ST_TASKS_UNFINISHED, rows_out, count_out, err);
}

/* --- session messages -------------------------------------------------------------------- */

int nx_store_message_add(nx_store_t *self, const char *session, const char *role,
                         const char *content, const char *agent, int64_t task, nx_err_t *err)
{
    if (!session || !role || !content)
        return invalid(self, err, "adding a message: session, role and content are required "
                                  "(got NULL)");
    if (task < 0)
        return invalid(self, err, "adding a message: task must be a task id or 0");
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, NX__ST_MSG_ADD, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, role, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, content, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, agent, -1, SQLITE_STATIC); /* NULL allowed */
    if (task > 0)
        sqlite3_bind_int64(st, 5, task);
    sqlite3_bind_double(st, 6, nx__store_now());
    return nx__store_step_done(self, st, NX__ST_MSG_ADD, err);
}

void nx_message_rows_free(nx_message_row_t *rows, size_t count)
{
    for (size_t i = 0; rows && i < count; i++) {
        free(rows[i].role);
        free(rows[i].content);
        free(rows[i].agent);
    }
    free(rows);
}

/* The id of the user message that starts the last `turns` turns, or 0 when the session has
 * fewer (then everything is returned). */
static int turn_start(nx_store_t *self, const char *session, uint32_t turns, int64_t *start_out,
                      nx_err_t *err)
{
    *start_out = 0;
    if (turns == 0)
        return NX_OK;
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, NX__ST_MSG_TURN_START, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)turns - 1);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *start_out = sqlite3_column_int64(st, 0);
    else if (step != SQLITE_DONE)
        rc = nx__store_sqlerr(self->db, self->path, step,
                              nx__store_purpose(NX__ST_MSG_TURN_START), err);
    nx__store_done(st);
    return rc;
}

static int read_message(sqlite3_stmt *st, nx_message_row_t *row)
{
    bool ok = true;
    row->role = nx__store_dup(sqlite3_column_text(st, 0), &ok);
    row->content = nx__store_dup(sqlite3_column_text(st, 1), &ok);
    row->agent = nx__store_dup(sqlite3_column_text(st, 2), &ok);
    row->task = sqlite3_column_int64(st, 3);
    row->at = sqlite3_column_double(st, 4);
    return ok ? NX_OK : NX_ENOMEM;
}

int nx_store_messages(nx_store_t *self, const char *session, uint32_t max_turns,
                      nx_message_row_t **rows_out, size_t *count_out, nx_err_t *err)
{
    *rows_out = NULL;
    *count_out = 0;
    if (!session)
        return invalid(self, err, "reading messages: session is required (got NULL)");
    int64_t start;
    int rc = turn_start(self, session, max_turns, &start, err);
    sqlite3_stmt *st;
    if (!rc)
        rc = nx__store_stmt(self, NX__ST_MSG_SINCE, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, start);
    nx_message_row_t *rows = NULL;
    size_t count = 0, cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            size_t new_cap = cap ? cap * 2 : 16;
            nx_message_row_t *grown = realloc(rows, new_cap * sizeof *rows);
            if (!grown)
                goto out_nomem;
            rows = grown;
            cap = new_cap;
        }
        memset(&rows[count], 0, sizeof rows[count]);
        count++; /* counted first so that a half-read row is freed too */
        if (read_message(st, &rows[count - 1]))
            goto out_nomem;
    }
    if (step != SQLITE_DONE) {
        rc = nx__store_sqlerr(self->db, self->path, step, nx__store_purpose(NX__ST_MSG_SINCE),
                              err);
        goto out_free;
    }
    nx__store_done(st);
    *rows_out = rows;
    *count_out = count;
    return NX_OK;

out_nomem:
    rc = nx_err_set(err, NX_ENOMEM, "store '%s': reading session '%s': out of memory",
                    self->path, session);
out_free:
    nx__store_done(st);
    nx_message_rows_free(rows, count);
    return rc;
}

bool nx_store_session_exists(nx_store_t *self, const char *session)
{
    if (!session)
        return false;
    sqlite3_stmt *st;
    nx_err_t err = {0};
    if (nx__store_stmt(self, NX__ST_SESSION_EXISTS, &st, &err)) {
        nx_log(NX_LOG_ERROR, "%s", err.msg);
        return false;
    }
    sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        nx__store_sqlerr(self->db, self->path, step, nx__store_purpose(NX__ST_SESSION_EXISTS),
                         &err);
        nx_log(NX_LOG_ERROR, "%s", err.msg);
    }
    nx__store_done(st);
    return step == SQLITE_ROW;
}
