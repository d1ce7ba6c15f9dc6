/* store.h — the daemon's state in SQLite (WAL): agents, models, tasks, session messages and
 * residency events, with a schema version and migrations. These functions are synchronous and
 * NOT thread-safe: exactly one thread (the store thread, see nexusd) owns an nx_store_t and
 * calls them; it groups many requests into one transaction (nx_store_begin/commit) so that
 * durability before acknowledgement stays fast.
 */
#ifndef NX_STORE_H
#define NX_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nx_err.h"

typedef struct nx_store nx_store_t;

/* Open (creating) the database at path: WAL mode with synchronous=FULL (the WAL is fsynced at
 * every commit, so a commit survives kill -9 and power loss), foreign keys on; migrate to the
 * current schema version.
 * A database from a newer version is refused (NX_ENOTSUP naming both versions). */
nx_store_t *nx_store_open(const char *path, nx_err_t *err);
void nx_store_close(nx_store_t **self_p);
int nx_store_schema_version(nx_store_t *self); /* the version after migration */

/* Group commit: everything between begin and commit is one transaction. */
int nx_store_begin(nx_store_t *self, nx_err_t *err);
int nx_store_commit(nx_store_t *self, nx_err_t *err);
int nx_store_rollback(nx_store_t *self);

/* Make the calls between these two one unit, inside a group transaction or not: end(rc)
 * keeps their writes when rc is NX_OK and undoes them (only theirs) otherwise; it returns rc,
 * or the error of keeping them. Units nest. */
int nx_store_unit_begin(nx_store_t *self, nx_err_t *err);
int nx_store_unit_end(nx_store_t *self, int rc, nx_err_t *err);

/* Agents and models: upserts at start-up (definition text and its hash). */
int nx_store_put_agent(nx_store_t *self, const char *name, const char *definition,
                       const char *hash, const char *model, nx_err_t *err);
int nx_store_put_model(nx_store_t *self, const char *name, const char *path, uint64_t bytes,
                       nx_err_t *err);

typedef enum nx_task_status {
    NX_TASK_ACCEPTED = 0,
    NX_TASK_RUNNING,
    NX_TASK_DONE,
    NX_TASK_FAILED,
    NX_TASK_CANCELED,
} nx_task_status_t;
const char *nx_task_status_name(nx_task_status_t s); /* "accepted", ... */

typedef struct nx_task_timings {
    double queue_ms, swap_ms, ttft_ms, total_ms;
} nx_task_timings_t;

typedef struct nx_task_new {
    const char *agent;
    const char *input;
    const char *session;     /* NULL when none */
    const char *client_id;   /* the request's id, as msgpack bytes hex or text (for listing) */
    const char *params_json; /* generation overrides as JSON, or NULL */
    const char *route_json;  /* remaining route as a JSON array of names, or NULL */
    int64_t parent;          /* the previous stage's task id in a pipeline, or 0 */
} nx_task_new_t;

/* Insert a task with status accepted; *id_out gets its id. */
int nx_store_task_insert(nx_store_t *self, const nx_task_new_t *task, int64_t *id_out,
                         nx_err_t *err);
int nx_store_task_running(nx_store_t *self, int64_t id, nx_err_t *err);
/* Final state: done (output), failed/canceled (error_code, error). */
int nx_store_task_finish(nx_store_t *self, int64_t id, nx_task_status_t status,
                         const char *output, const char *error_code, const char *error,
                         const nx_task_timings_t *timings, uint32_t prompt_tokens,
                         uint32_t completion_tokens, nx_err_t *err);
/* Record how many older session turns were left out of the task's prompt so that it fit the
 * context (schemas/protocol.md: turns_dropped). NX_ENOTFOUND when there is no such task. */
int nx_store_task_turns_dropped(nx_store_t *self, int64_t id, uint32_t turns, nx_err_t *err);

typedef struct nx_task_row {
    int64_t id;
    char *agent, *input, *output, *session, *error_code, *error, *params_json, *route_json;
    char *client_id;
    int64_t parent;
    nx_task_status_t status;
    nx_task_timings_t timings;
    uint32_t prompt_tokens, completion_tokens;
    double created_at, started_at, finished_at; /* unix seconds */
    uint32_t turns_dropped; /* older session turns left out of the prompt (0: none) */
} nx_task_row_t;

/* Newest first; agent may be NULL (all). *rows_out malloc'ed; free with nx_task_rows_free. */
int nx_store_tasks(nx_store_t *self, const char *agent, uint32_t limit, nx_task_row_t **rows_out,
                   size_t *count_out, nx_err_t *err);
int nx_store_task_get(nx_store_t *self, int64_t id, nx_task_row_t *row_out, nx_err_t *err);
/* Tasks left accepted or running (after a crash), oldest first. */
int nx_store_tasks_unfinished(nx_store_t *self, nx_task_row_t **rows_out, size_t *count_out,
                              nx_err_t *err);
void nx_task_rows_free(nx_task_row_t *rows, size_t count);
void nx_task_row_clear(nx_task_row_t *row);

/* Task ends the database could not take (store_ends.c): kept in "<db_path>-ends", a small
 * file of slots whose space is reserved at open, so a full disk can still record them; stored
 * into the database by nx_store_ends_flush once it takes writes again (the store thread
 * retries; nexusd's start-up flushes what a previous run left before marking unfinished tasks
 * "interrupted by a restart"). Not thread-safe: the store's thread owns it. */
typedef struct nx_store_end {
    int64_t task_id;   /* 0: an empty slot */
    char code[24];     /* the wire error code the client got, e.g. "storage_full" */
    char message[224]; /* what the task row's error will say */
} nx_store_end_t;
typedef struct nx_store_ends nx_store_ends_t;

/* Open (creating) the record beside the database at db_path and read what it holds; with
 * db_path NULL, a record in memory only. A failure to reserve its space is logged, not
 * returned. Caller owns the result. */
nx_store_ends_t *nx_store_ends_open(const char *db_path, nx_err_t *err);
void nx_store_ends_close(nx_store_ends_t **self_p);
/* Remember that task_id ended failed with code and message (cut to fit its slot). NX_ENOSPC
 * when every slot is taken, or an I/O error writing the file (it is then kept in memory). */
int nx_store_ends_add(nx_store_ends_t *self, int64_t task_id, const char *code,
                      const char *message, nx_err_t *err);
/* The remembered end of task_id, or NULL. Valid until the next add or flush. */
const nx_store_end_t *nx_store_ends_find(const nx_store_ends_t *self, int64_t task_id);
size_t nx_store_ends_count(const nx_store_ends_t *self);
/* Store every remembered end (status failed) in one transaction of its own, then forget them;
 * a task already final or gone is skipped. On an error nothing is forgotten. Must not be
 * called inside a group transaction. */
int nx_store_ends_flush(nx_store_ends_t *self, nx_store_t *store, nx_err_t *err);
/* The database's path as given to nx_store_open. */
const char *nx_store_path(const nx_store_t *self);

/* Session messages: append one; read the last `max_turns` turns (a turn = a user message and
 * the assistant reply after it; 0 = all), oldest first. */
int nx_store_message_add(nx_store_t *self, const char *session, const char *role,
                         const char *content, const char *agent, int64_t task, nx_err_t *err);
typedef struct nx_message_row {
    char *role, *content, *agent;
    int64_t task;
    double at;
} nx_message_row_t;
int nx_store_messages(nx_store_t *self, const char *session, uint32_t max_turns,
                      nx_message_row_t **rows_out, size_t *count_out, nx_err_t *err);
void nx_message_rows_free(nx_message_row_t *rows, size_t count);
bool nx_store_session_exists(nx_store_t *self, const char *session);

/* Residency events: model, event ("loading", "resident", "evicting", "host", "disk"), bytes,
 * ms, reason; also bumps the model's counters (loads, last_swap_ms, last_used). */
int nx_store_residency_event(nx_store_t *self, const char *model, const char *event,
                             uint64_t bytes, double ms, const char *reason, nx_err_t *err);

#endif
