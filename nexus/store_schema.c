/* store_schema.c — the store's schema as an ordered list of migrations and the code that
 * applies them. The version lives in PRAGMA user_version; migration N takes a database at
 * version N-1 to N. To change the schema, append a migration (never edit a shipped one):
 *
 *     {2, "add tasks.priority", "ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;"},
 *
 * Times are unix seconds as REAL. Task status is stored as its name so that the file reads
 * well in the sqlite3 shell.
 */
#include "store_internal.h"

#include <stdio.h>

static const char schema_v1[] =
    "CREATE TABLE agents ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  definition TEXT NOT NULL,"
    "  hash TEXT NOT NULL,"
    "  model TEXT NOT NULL,"
    "  updated_at REAL NOT NULL);"
    "CREATE TABLE models ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  path TEXT,"
    "  bytes INTEGER NOT NULL DEFAULT 0,"
    "  loads INTEGER NOT NULL DEFAULT 0,"
    "  last_swap_ms REAL,"
    "  last_used_at REAL);"
    "CREATE TABLE tasks ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  client_id TEXT,"
    "  agent TEXT NOT NULL,"
    "  session TEXT,"
    "  input TEXT NOT NULL,"
    "  output TEXT,"
    "  status TEXT NOT NULL CHECK (status IN"
    "    ('accepted', 'running', 'done', 'failed', 'canceled')),"
    "  error_code TEXT,"
    "  error TEXT,"
    "  params_json TEXT,"
    "  route_json TEXT,"
    "  parent INTEGER REFERENCES tasks(id),"
    "  queue_ms REAL, swap_ms REAL, ttft_ms REAL, total_ms REAL,"
    "  prompt_tokens INTEGER, completion_tokens INTEGER,"
    "  created_at REAL NOT NULL,"
    "  started_at REAL,"
    "  finished_at REAL);"
    "CREATE INDEX tasks_agent_id ON tasks(agent, id);"
    "CREATE INDEX tasks_status ON tasks(status);"
    "CREATE TABLE messages ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  session TEXT NOT NULL,"
    "  role TEXT NOT NULL,"
    "  content TEXT NOT NULL,"
    "  agent TEXT,"
    "  task INTEGER REFERENCES tasks(id),"
    "  at REAL NOT NULL);"
    "CREATE INDEX messages_session_id ON messages(session, id);"
    "CREATE TABLE residency_events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  model TEXT NOT NULL,"
    "  event TEXT NOT NULL,"
    "  bytes INTEGER NOT NULL,"
    "  ms REAL,"
    "  reason TEXT,"
    "  at REAL NOT NULL);";

/* A session task's prompt keeps the newest turns that fit the context: how many older turns
 * were left out of it. Rows from before version 2 read 0. */
static const char schema_v2[] =
    "ALTER TABLE tasks ADD COLUMN turns_dropped INTEGER NOT NULL DEFAULT 0;";

const nx__migration_t nx__store_migrations[] = {
    {1, "create the tables", schema_v1},
    {2, "add tasks.turns_dropped", schema_v2},
};
const size_t nx__store_migration_count = sizeof nx__store_migrations / sizeof nx__store_migrations[0];

int nx__store_read_version(sqlite3 *db, const char *path, int *version_out, nx_err_t *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *version_out = sqlite3_column_int(st, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK)
        return nx__store_sqlerr(db, path, rc, "reading the schema version (PRAGMA user_version)",
                                err);
    return NX_OK;
}

static int exec(sqlite3 *db, const char *path, const char *sql, const char *purpose, nx_err_t *err)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? NX_OK : nx__store_sqlerr(db, path, rc, purpose, err);
}

static int newer_refused(const char *path, int found, int known, nx_err_t *err)
{
    return nx_err_set(err, NX_ENOTSUP,
                      "store '%s': the database has schema version %d, newer than the %d this "
                      "build knows; refusing to open it (use a newer nexusd, or another file)",
                      path, found, known);
}

/* Apply one migration if the database is still at its previous version. */
static int apply_one(sqlite3 *db, const char *path, const nx__migration_t *m, int known,
                     nx_err_t *err)
{
    char purpose[256];
    int rc = exec(db, path, "BEGIN IMMEDIATE", "starting a schema migration", err);
    if (rc)
        return rc;
    int version = 0;
    rc = nx__store_read_version(db, path, &version, err);
    if (rc)
        goto out_rollback;
    if (version > known) {
        rc = newer_refused(path, version, known, err);
        goto out_rollback;
    }
    if (version >= m->version) /* another process migrated it meanwhile */
        goto out_rollback;
    snprintf(purpose, sizeof purpose, "migrating to schema version %d (%s)", m->version,
             m->purpose);
    rc = exec(db, path, m->sql, purpose, err);
    if (rc)
        goto out_rollback;
    char set_version[64];
    snprintf(set_version, sizeof set_version, "PRAGMA user_version = %d", m->version);
    rc = exec(db, path, set_version, purpose, err);
    if (rc)
        goto out_rollback;
    return exec(db, path, "COMMIT", purpose, err);

out_rollback:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int nx__store_check_version(sqlite3 *db, const char *path, const nx__migration_t *list,
                            size_t count, int *version_out, nx_err_t *err)
{
    int known = count ? list[count - 1].version : 0;
    int rc = nx__store_read_version(db, path, version_out, err);
    if (rc)
        return rc;
    return *version_out > known ? newer_refused(path, *version_out, known, err) : NX_OK;
}

int nx__store_migrate(sqlite3 *db, const char *path, const nx__migration_t *list, size_t count,
                      int *version_out, nx_err_t *err)
{
    int known = count ? list[count - 1].version : 0;
    int version = 0;
    int rc = nx__store_check_version(db, path, list, count, &version, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < count; i++) {
        if (list[i].version != (int)i + 1)
            return nx_err_set(err, NX_EINVAL,
                              "store '%s': migration %zu has version %d, expected %zu "
                              "(migrations must be numbered 1, 2, ... in order)",
                              path, i, list[i].version, i + 1);
        if (list[i].version <= version)
            continue;
        rc = apply_one(db, path, &list[i], known, err);
        if (rc)
            return rc;
        nx_log(NX_LOG_INFO, "store '%s': migrated to schema version %d (%s)", path,
               list[i].version, list[i].purpose);
    }
    rc = nx__store_read_version(db, path, &version, err);
    if (rc)
        return rc;
    *version_out = version;
    return NX_OK;
}
