/* store.c — opening the daemon's SQLite database (WAL, synchronous=FULL, foreign keys,
 * busy timeout, migrations), the prepared-statement cache, group commit, and the agents,
 * models and residency-event tables. Tasks and messages are in store_tasks.c.
 *
 * Durability: in WAL mode synchronous=FULL fsyncs the WAL at every commit, so a commit that
 * returned survives a kill -9 and a power loss (NORMAL would only survive the former). The
 * store thread makes that affordable by committing many requests at once (nx_store_begin /
 * nx_store_commit) before acknowledging them.
 */
#include "store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUSY_TIMEOUT_MS 5000

static const struct {
    const char *sql;
    const char *purpose;
} statements[NX__ST__COUNT] = {
    [NX__ST_SAVEPOINT] = {"SAVEPOINT nx_call", "starting a savepoint"},
    [NX__ST_RELEASE] = {"RELEASE nx_call", "releasing a savepoint"},
    [NX__ST_ROLLBACK_TO] = {"ROLLBACK TO nx_call", "rolling back a savepoint"},
    [NX__ST_AGENT_PUT] =
        {"INSERT INTO agents (name, definition, hash, model, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)"
         " ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,"
         " hash = excluded.hash, model = excluded.model,"
         " updated_at = CASE WHEN agents.hash IS excluded.hash AND agents.model IS excluded.model"
         " AND agents.definition IS excluded.definition"
         " THEN agents.updated_at ELSE excluded.updated_at END",
         "storing an agent"},
    [NX__ST_MODEL_PUT] = {"INSERT INTO models (name, path, bytes) VALUES (?1, ?2, ?3)"
                          " ON CONFLICT (name) DO UPDATE SET path = excluded.path,"
                          " bytes = excluded.bytes",
                          "storing a model"},
    [NX__ST_MODEL_BUMP] =
        {"INSERT INTO models (name, bytes, loads, last_swap_ms, last_used_at)"
         " VALUES (?1, ?2, ?3, ?4, ?5)"
         " ON CONFLICT (name) DO UPDATE SET"
         " bytes = CASE WHEN excluded.bytes > 0 THEN excluded.bytes ELSE models.bytes END,"
         " loads = models.loads + excluded.loads,"
         " last_swap_ms = coalesce(excluded.last_swap_ms, models.last_swap_ms),"
         " last_used_at = coalesce(excluded.last_used_at, models.last_used_at)",
         "updating a model's residency counters"},
    [NX__ST_EVENT_ADD] = {"INSERT INTO residency_events (model, event, bytes, ms, reason, at)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                          "recording a residency event"},
    [NX__ST_TASK_INSERT] =
        {"INSERT INTO tasks (client_id, agent, session, input, status, params_json, route_json,"
         " parent, created_at) VALUES (?1, ?2, ?3, ?4, 'accepted', ?5, ?6, ?7, ?8)",
         "inserting a task"},
    [NX__ST_TASK_RUNNING] = {"UPDATE tasks SET status = 'running', started_at = ?2"
                             " WHERE id = ?1 AND status = 'accepted'",
                             "marking a task running"},
    [NX__ST_TASK_FINISH] =
        {"UPDATE tasks SET status = ?2, output = ?3, error_code = ?4, error = ?5,"
         " queue_ms = ?6, swap_ms = ?7, ttft_ms = ?8, total_ms = ?9, prompt_tokens = ?10,"
         " completion_tokens = ?11, finished_at = ?12"
         " WHERE id = ?1 AND status IN ('accepted', 'running')",
         "finishing a task"},
    [NX__ST_TASK_TURNS_DROPPED] = {"UPDATE tasks SET turns_dropped = ?2 WHERE id = ?1",
                                   "recording the session turns left out of a task's prompt"},
    [NX__ST_TASK_STATUS] = {"SELECT status FROM tasks WHERE id = ?1", "reading a task's status"},
    [NX__ST_TASK_GET] = {NX__TASK_SELECT " WHERE id = ?1", "reading a task"},
    [NX__ST_TASKS_ALL] = {NX__TASK_SELECT " ORDER BY id DESC LIMIT ?1", "listing tasks"},
    [NX__ST_TASKS_AGENT] = {NX__TASK_SELECT " WHERE agent = ?2 ORDER BY id DESC LIMIT ?1",
                            "listing an agent's tasks"},
    [NX__ST_TASKS_UNFINISHED] = {NX__TASK_SELECT " WHERE status IN ('accepted', 'running')"
                                                 " ORDER BY id ASC",
                                 "listing unfinished tasks"},
    [NX__ST_MSG_ADD] = {"INSERT INTO messages (session, role, content, agent, task, at)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        "adding a session message"},
    [NX__ST_MSG_TURN_START] = {"SELECT id FROM messages WHERE session = ?1 AND role = 'user'"
                               " ORDER BY id DESC LIMIT 1 OFFSET ?2",
                               "finding where a session's last turns start"},
    [NX__ST_MSG_SINCE] = {"SELECT role, content, agent, task, at FROM messages"
                          " WHERE session = ?1 AND id >= ?2 ORDER BY id ASC",
                          "reading a session's messages"},
    [NX__ST_SESSION_EXISTS] = {"SELECT 1 FROM messages WHERE session = ?1 LIMIT 1",
                               "looking a session up"},
};

const char *nx__store_purpose(int id)
{
    return statements[id].purpose;
}

double nx__store_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

char *nx__store_dup(const unsigned char *text, bool *ok)
{
    if (!text)
        return NULL;
    char *copy = strdup((const char *)text);
    if (!copy)
        *ok = false;
    return copy;
}

int nx__store_sqlerr(sqlite3 *db, const char *path, int rc, const char *purpose, nx_err_t *err)
{
    int code;
    const char *hint = "";
    switch (rc & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
        code = NX_EFORMAT;
        hint = " (the file is not an intact SQLite database)";
        break;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
        code = NX_EINVAL;
        break;
    case SQLITE_NOMEM:
        code = NX_ENOMEM;
        break;
    case SQLITE_FULL:
        code = NX_ENOSPC;
        hint = " (the disk holding the database is full)";
        break;
    case SQLITE_IOERR: /* a write or sync refused for want of space says so in errno */
        code = db && sqlite3_system_errno(db) == ENOSPC ? NX_ENOSPC : NX_EDISK;
        hint = code == NX_ENOSPC ? " (the disk holding the database is full)"
                                 : " (the disk holding the database failed a read, write or sync)";
        break;
    case SQLITE_READONLY: /* the file or its volume turned read-only under us */
        code = NX_EDISK;
        break;
    default: /* SQLITE_ERROR, SQLITE_MISUSE and the like: most likely our SQL or our use of it */
        code = NX_EIO;
    }
    const char *text = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    return nx_err_set(err, code, "store '%s': %s: %s (sqlite code %d)%s", path, purpose, text, rc,
                      hint);
}

int nx__store_stmt(nx_store_t *self, int id, sqlite3_stmt **out, nx_err_t *err)
{
    if (self->in_txn && sqlite3_get_autocommit(self->db))
        return nx_err_set(err, NX_EIO,
                          "store '%s': %s: the group transaction was rolled back by an earlier "
                          "error; roll back and begin again",
                          self->path, statements[id].purpose);
    if (!self->stmts[id]) {
        int rc = sqlite3_prepare_v3(self->db, statements[id].sql, -1, SQLITE_PREPARE_PERSISTENT,
                                    &self->stmts[id], NULL);
        if (rc != SQLITE_OK)
            return nx__store_sqlerr(self->db, self->path, rc, statements[id].purpose, err);
    }
    *out = self->stmts[id];
    return NX_OK;
}

void nx__store_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

int nx__store_step_done(nx_store_t *self, sqlite3_stmt *st, int id, nx_err_t *err)
{
    int rc = sqlite3_step(st);
    int code = rc == SQLITE_DONE ? NX_OK
                                 : nx__store_sqlerr(self->db, self->path, rc,
                                                    statements[id].purpose, err);
    nx__store_done(st);
    return code;
}

static int run_simple(nx_store_t *self, int id, nx_err_t *err)
{
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, id, &st, err);
    return rc ? rc : nx__store_step_done(self, st, id, err);
}

int nx__store_atomic_begin(nx_store_t *self, nx_err_t *err)
{
    return run_simple(self, NX__ST_SAVEPOINT, err);
}

int nx__store_atomic_end(nx_store_t *self, int rc, nx_err_t *err)
{
    if (rc == NX_OK)
        return run_simple(self, NX__ST_RELEASE, err);
    /* Undo this call's writes, then close the savepoint; the caller's error stands. */
    if (!sqlite3_get_autocommit(self->db)) {
        run_simple(self, NX__ST_ROLLBACK_TO, NULL);
        run_simple(self, NX__ST_RELEASE, NULL);
    }
    return rc;
}

int nx_store_unit_begin(nx_store_t *self, nx_err_t *err)
{
    return nx__store_atomic_begin(self, err);
}

int nx_store_unit_end(nx_store_t *self, int rc, nx_err_t *err)
{
    return nx__store_atomic_end(self, rc, err);
}

/* --- open and close ---------------------------------------------------------------------- */

static int pragma(nx_store_t *self, const char *sql, const char *expect, const char *purpose,
                  nx_err_t *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(self->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && expect) {
            const char *got = (const char *)sqlite3_column_text(st, 0);
            if (!got || strcmp(got, expect) != 0) {
                int code = nx_err_set(err, NX_EIO, "store '%s': %s: SQLite answered '%s', not '%s'",
                                      self->path, purpose, got ? got : "(null)", expect);
                sqlite3_finalize(st);
                return code;
            }
        }
        if (rc == SQLITE_ROW || rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? NX_OK : nx__store_sqlerr(self->db, self->path, rc, purpose, err);
}

static int configure(nx_store_t *self, nx_err_t *err)
{
    int rc = sqlite3_busy_timeout(self->db, BUSY_TIMEOUT_MS);
    if (rc != SQLITE_OK)
        return nx__store_sqlerr(self->db, self->path, rc, "setting the busy timeout", err);
    sqlite3_extended_result_codes(self->db, 1);
    /* Read the version before changing anything: a non-database, a read-only file or a newer
     * schema is refused without touching the file. */
    int version = 0;
    rc = nx__store_check_version(self->db, self->path, nx__store_migrations,
                                 nx__store_migration_count, &version, err);
    if (rc)
        return rc;
    if (sqlite3_db_readonly(self->db, "main") == 1)
        return nx_err_set(err, NX_EIO,
                          "store '%s': the database file is read-only (check its permissions "
                          "and its folder's)",
                          self->path);
    bool in_memory = strcmp(self->path, ":memory:") == 0 || self->path[0] == '\0';
    rc = pragma(self, "PRAGMA journal_mode = WAL", in_memory ? NULL : "wal",
                "switching to WAL journal mode", err);
    if (!rc)
        rc = pragma(self, "PRAGMA synchronous = FULL", NULL, "setting synchronous = FULL", err);
    if (!rc)
        rc = pragma(self, "PRAGMA foreign_keys = ON", NULL, "turning foreign keys on", err);
    return rc;
}

nx_store_t *nx_store_open(const char *path, nx_err_t *err)
{
    if (!path)
        return nx_err_set(err, NX_EINVAL, "store: no database path given"), NULL;
    nx_store_t *self = calloc(1, sizeof *self);
    if (!self || !(self->path = strdup(path))) {
        free(self);
        nx_err_set(err, NX_ENOMEM, "store '%s': out of memory opening it", path);
        return NULL;
    }
    int rc = sqlite3_open_v2(path, &self->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        nx__store_sqlerr(self->db, path, rc, "opening the database file", err);
        goto out_close;
    }
    if (configure(self, err))
        goto out_close;
    if (nx__store_migrate(self->db, path, nx__store_migrations, nx__store_migration_count,
                          &self->version, err))
        goto out_close;
    return self;

out_close:
    nx_store_close(&self);
    return NULL;
}

void nx_store_close(nx_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_store_t *self = *self_p;
    for (int i = 0; i < NX__ST__COUNT; i++)
        sqlite3_finalize(self->stmts[i]);
    if (self->db && !sqlite3_get_autocommit(self->db)) /* never acknowledged: discard */
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
    int rc = sqlite3_close_v2(self->db);
    if (rc != SQLITE_OK)
        nx_log(NX_LOG_WARN, "store '%s': closing: %s", self->path, sqlite3_errstr(rc));
    free(self->path);
    free(self);
    *self_p = NULL;
}

int nx_store_schema_version(nx_store_t *self)
{
    return self->version;
}

const char *nx_store_path(const nx_store_t *self)
{
    return self->path;
}

/* --- group commit ------------------------------------------------------------------------ */

int nx_store_begin(nx_store_t *self, nx_err_t *err)
{
    if (self->in_txn)
        return nx_err_set(err, NX_ESTATE, "store '%s': begin inside an open group transaction",
                          self->path);
    /* IMMEDIATE takes the write lock now, so the commit cannot fail on a lock upgrade. */
    int rc = sqlite3_exec(self->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return nx__store_sqlerr(self->db, self->path, rc, "beginning a group transaction", err);
    self->in_txn = true;
    return NX_OK;
}

int nx_store_commit(nx_store_t *self, nx_err_t *err)
{
    if (!self->in_txn)
        return nx_err_set(err, NX_ESTATE, "store '%s': commit without begin", self->path);
    self->in_txn = false;
    if (sqlite3_get_autocommit(self->db))
        return nx_err_set(err, NX_EIO,
                          "store '%s': committing a group transaction: it was already rolled "
                          "back by an earlier error, nothing in it is stored",
                          self->path);
    int rc = sqlite3_exec(self->db, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        return NX_OK;
    int code = nx__store_sqlerr(self->db, self->path, rc, "committing a group transaction", err);
    if (!sqlite3_get_autocommit(self->db)) /* still open: undo it, nothing was acknowledged */
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
    return code;
}

int nx_store_rollback(nx_store_t *self)
{
    if (!self->in_txn)
        return NX_ESTATE;
    self->in_txn = false;
    if (sqlite3_get_autocommit(self->db))
        return NX_OK; /* SQLite already rolled it back */
    int rc = sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
    return rc == SQLITE_OK ? NX_OK : NX_EIO;
}

/* --- agents, models, residency ------------------------------------------------------------ */

static int require(const nx_store_t *self, const char *value, const char *what, nx_err_t *err)
{
    if (value)
        return NX_OK;
    return nx_err_set(err, NX_EINVAL, "store '%s': %s is required (got NULL)", self->path, what);
}

static int check_u64(const nx_store_t *self, uint64_t value, const char *what, nx_err_t *err)
{
    if (value <= (uint64_t)INT64_MAX)
        return NX_OK;
    return nx_err_set(err, NX_EINVAL, "store '%s': %s %llu does not fit SQLite's 64-bit integer",
                      self->path, what, (unsigned long long)value);
}

int nx_store_put_agent(nx_store_t *self, const char *name, const char *definition,
                       const char *hash, const char *model, nx_err_t *err)
{
    int rc = require(self, name, "an agent's name", err);
    if (!rc)
        rc = require(self, definition, "an agent's definition", err);
    if (!rc)
        rc = require(self, hash, "an agent's hash", err);
    if (!rc)
        rc = require(self, model, "an agent's model", err);
    sqlite3_stmt *st;
    if (!rc)
        rc = nx__store_stmt(self, NX__ST_AGENT_PUT, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, definition, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, model, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 5, nx__store_now());
    return nx__store_step_done(self, st, NX__ST_AGENT_PUT, err);
}

int nx_store_put_model(nx_store_t *self, const char *name, const char *path, uint64_t bytes,
                       nx_err_t *err)
{
    int rc = require(self, name, "a model's name", err);
    if (!rc)
        rc = check_u64(self, bytes, "model bytes", err);
    sqlite3_stmt *st;
    if (!rc)
        rc = nx__store_stmt(self, NX__ST_MODEL_PUT, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC); /* NULL allowed */
    sqlite3_bind_int64(st, 3, (sqlite3_int64)bytes);
    return nx__store_step_done(self, st, NX__ST_MODEL_PUT, err);
}

static bool known_event(const char *event)
{
    static const char *const events[] = {"loading", "resident", "evicting", "host", "disk"};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
        if (strcmp(event, events[i]) == 0)
            return true;
    return false;
}

/* Counters: "resident" counts a load (loads + 1, last_swap_ms = ms) and a use; "loading" is a
 * use (a task asked for the model); bytes > 0 updates the model's size. A model not stored
 * yet gets a row (path NULL), so no event is ever refused for ordering reasons. */
static int bump_model(nx_store_t *self, const char *model, const char *event, uint64_t bytes,
                      double ms, double now, nx_err_t *err)
{
    bool resident = strcmp(event, "resident") == 0;
    bool used = resident || strcmp(event, "loading") == 0;
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, NX__ST_MODEL_BUMP, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)bytes);
    sqlite3_bind_int(st, 3, resident ? 1 : 0);
    if (resident)
        sqlite3_bind_double(st, 4, ms);
    if (used)
        sqlite3_bind_double(st, 5, now);
    return nx__store_step_done(self, st, NX__ST_MODEL_BUMP, err);
}

static int add_event(nx_store_t *self, const char *model, const char *event, uint64_t bytes,
                     double ms, const char *reason, double now, nx_err_t *err)
{
    sqlite3_stmt *st;
    int rc = nx__store_stmt(self, NX__ST_EVENT_ADD, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, event, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)bytes);
    sqlite3_bind_double(st, 4, ms);
    sqlite3_bind_text(st, 5, reason, -1, SQLITE_STATIC); /* NULL allowed */
    sqlite3_bind_double(st, 6, now);
    return nx__store_step_done(self, st, NX__ST_EVENT_ADD, err);
}

int nx_store_residency_event(nx_store_t *self, const char *model, const char *event,
                             uint64_t bytes, double ms, const char *reason, nx_err_t *err)
{
    int rc = require(self, model, "a residency event's model", err);
    if (!rc)
        rc = require(self, event, "a residency event's name", err);
    if (!rc && !known_event(event))
        rc = nx_err_set(err, NX_EINVAL,
                        "store '%s': residency event '%s' for model '%s' is not one of loading, "
                        "resident, evicting, host, disk",
                        self->path, event, model);
    if (!rc)
        rc = check_u64(self, bytes, "residency event bytes", err);
    if (!rc)
        rc = nx__store_atomic_begin(self, err);
    if (rc)
        return rc;
    double now = nx__store_now();
    rc = add_event(self, model, event, bytes, ms, reason, now, err);
    if (!rc)
        rc = bump_model(self, model, event, bytes, ms, now, err);
    return nx__store_atomic_end(self, rc, err);
}
