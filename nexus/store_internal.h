/* store_internal.h — what store.c, store_tasks.c and store_schema.c share: the nx_store
 * struct, the prepared-statement cache (one table of SQL and purposes, prepared on first use),
 * SQLite error mapping and the migration framework. Not part of the store's public API; tests
 * include it to drive the migration framework with their own migration lists.
 */
#ifndef NX_STORE_INTERNAL_H
#define NX_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <sqlite3.h>

#include "store.h"

/* Every statement the store runs; nx__store_stmt prepares each once per connection. */
enum nx__stmt_id {
    NX__ST_SAVEPOINT,
    NX__ST_RELEASE,
    NX__ST_ROLLBACK_TO,
    NX__ST_AGENT_PUT,
    NX__ST_MODEL_PUT,
    NX__ST_MODEL_BUMP,
    NX__ST_EVENT_ADD,
    NX__ST_TASK_INSERT,
    NX__ST_TASK_RUNNING,
    NX__ST_TASK_FINISH,
    NX__ST_TASK_TURNS_DROPPED,
    NX__ST_TASK_STATUS,
    NX__ST_TASK_GET,
    NX__ST_TASKS_ALL,
    NX__ST_TASKS_AGENT,
    NX__ST_TASKS_UNFINISHED,
    NX__ST_MSG_ADD,
    NX__ST_MSG_TURN_START,
    NX__ST_MSG_SINCE,
    NX__ST_SESSION_EXISTS,
    NX__ST__COUNT
};

/* The columns nx__store_read_task expects, in this order. */
#define NX__TASK_SELECT                                                                         \
    "SELECT id, agent, input, output, session, error_code, error, params_json, route_json,"    \
    " client_id, parent, status, queue_ms, swap_ms, ttft_ms, total_ms, prompt_tokens,"         \
    " completion_tokens, created_at, started_at, finished_at, turns_dropped FROM tasks"

struct nx_store {
    sqlite3 *db;
    char *path;                            /* as given to nx_store_open */
    int version;                           /* schema version after migration */
    bool in_txn;                           /* between nx_store_begin and commit/rollback */
    sqlite3_stmt *stmts[NX__ST__COUNT];    /* prepared on first use, finalized at close */
};

/* The cached statement `id`, reset and unbound, in *out. Refuses (NX_EIO) when a group
 * transaction was rolled back behind our back by an earlier error, so later calls do not
 * silently autocommit. */
int nx__store_stmt(nx_store_t *self, int id, sqlite3_stmt **out, nx_err_t *err);
/* The purpose of statement `id` ("inserting a task"), for error messages. */
const char *nx__store_purpose(int id);
/* Step a statement that returns no rows; resets it. NX_OK or the mapped error. */
int nx__store_step_done(nx_store_t *self, sqlite3_stmt *st, int id, nx_err_t *err);
/* Reset and unbind after use (every path, so no statement holds a read transaction open). */
void nx__store_done(sqlite3_stmt *st);
/* Map an SQLite result code to an NX code and fill err with "store 'path': purpose: errmsg".
 * NOTADB/CORRUPT -> NX_EFORMAT, CONSTRAINT/MISMATCH/RANGE/TOOBIG -> NX_EINVAL,
 * NOMEM -> NX_ENOMEM, FULL (and an I/O error whose errno is ENOSPC) -> NX_ENOSPC, everything
 * else NX_EIO. */
int nx__store_sqlerr(sqlite3 *db, const char *path, int rc, const char *purpose, nx_err_t *err);
/* Wall-clock now as unix seconds with sub-second precision. */
double nx__store_now(void);
/* strdup that maps NULL to NULL; *ok is set false when out of memory. */
char *nx__store_dup(const unsigned char *text, bool *ok);

/* Savepoint around a call that runs several statements, so it is atomic both inside a group
 * transaction and in autocommit mode. end(rc) releases on NX_OK and rolls back otherwise. */
int nx__store_atomic_begin(nx_store_t *self, nx_err_t *err);
int nx__store_atomic_end(nx_store_t *self, int rc, nx_err_t *err);

/* --- schema (store_schema.c) ------------------------------------------------------------- */

/* One step of the schema: applied when the database's user_version is version - 1, in one
 * transaction together with setting user_version = version. */
typedef struct nx__migration {
    int version;         /* 1, 2, ... in order, no gaps */
    const char *purpose; /* "create the tables", for error messages */
    const char *sql;     /* one or more statements */
} nx__migration_t;

extern const nx__migration_t nx__store_migrations[];
extern const size_t nx__store_migration_count;

/* PRAGMA user_version of db. A file that is not a database is NX_EFORMAT naming path. */
int nx__store_read_version(sqlite3 *db, const char *path, int *version_out, nx_err_t *err);
/* Read the version and refuse (NX_ENOTSUP naming both versions) one newer than list knows. */
int nx__store_check_version(sqlite3 *db, const char *path, const nx__migration_t *list,
                            size_t count, int *version_out, nx_err_t *err);
/* Bring db up to the last migration of list (count entries, versions 1..count). A database
 * newer than that is NX_ENOTSUP naming both versions. Each step runs in its own BEGIN
 * IMMEDIATE transaction (re-reading user_version inside it, so two processes opening one file
 * cannot both migrate); a failing step leaves the database at the version before it. */
int nx__store_migrate(sqlite3 *db, const char *path, const nx__migration_t *list, size_t count,
                      int *version_out, nx_err_t *err);

#endif
