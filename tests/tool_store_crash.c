/* tool_store_crash.c — the writer that tests/test_store_crash.py kills with SIGKILL.
 *
 *   tool_store_crash DB            insert tasks forever in group commits of 10 (each group also
 *                                  finishes the previous group's tasks and adds a message per
 *                                  task); after each commit print "task ID" for every task and
 *                                  "done ID" for every task it finished, then flush
 *   tool_store_crash --list DB     reopen DB through the store and print "ID STATUS" per task,
 *                                  oldest first
 *
 * A line is printed only after nx_store_commit returned NX_OK, so every printed id must be in
 * the database after any crash. Exit status 1 on any store error (the message on stderr).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define GROUP 10

static int fail(const nx_err_t *err)
{
    fprintf(stderr, "tool_store_crash: %s\n", err->msg);
    return 1;
}

static int list(const char *path)
{
    nx_err_t err = {0};
    nx_store_t *store = nx_store_open(path, &err);
    if (!store)
        return fail(&err);
    nx_task_row_t *rows = NULL;
    size_t count = 0;
    if (nx_store_tasks(store, NULL, 0, &rows, &count, &err)) {
        nx_store_close(&store);
        return fail(&err);
    }
    for (size_t i = count; i-- > 0;) /* newest first -> oldest first */
        printf("%" PRId64 " %s\n", rows[i].id, nx_task_status_name(rows[i].status));
    nx_task_rows_free(rows, count);
    nx_store_close(&store);
    return 0;
}

/* One group, one transaction: insert GROUP tasks (ids gets them) with a message each, and
 * finish the previous group's tasks. */
static int group(nx_store_t *store, int64_t *ids, int64_t *prev, size_t prev_count, nx_err_t *err)
{
    int rc = nx_store_begin(store, err);
    for (size_t i = 0; !rc && i < GROUP; i++) {
        char input[64];
        snprintf(input, sizeof input, "input %zu — ünïcödé", i);
        nx_task_new_t task = {.agent = "crash", .input = input, .session = "s1"};
        rc = nx_store_task_insert(store, &task, &ids[i], err);
        if (!rc)
            rc = nx_store_message_add(store, "s1", "user", input, NULL, ids[i], err);
    }
    nx_task_timings_t timings = {1, 2, 3, 4};
    for (size_t i = 0; !rc && i < prev_count; i++)
        rc = nx_store_task_finish(store, prev[i], NX_TASK_DONE, "output", NULL, NULL, &timings,
                                  5, 6, err);
    if (rc) {
        nx_store_rollback(store);
        return rc;
    }
    return nx_store_commit(store, err);
}

static int write_forever(const char *path)
{
    nx_err_t err = {0};
    nx_store_t *store = nx_store_open(path, &err);
    if (!store)
        return fail(&err);
    int64_t ids[GROUP], prev[GROUP];
    size_t prev_count = 0;
    for (;;) {
        if (group(store, ids, prev, prev_count, &err)) {
            nx_store_close(&store);
            return fail(&err);
        }
        for (size_t i = 0; i < GROUP; i++)
            printf("task %" PRId64 "\n", ids[i]);
        for (size_t i = 0; i < prev_count; i++)
            printf("done %" PRId64 "\n", prev[i]);
        fflush(stdout);
        memcpy(prev, ids, sizeof ids);
        prev_count = GROUP;
    }
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--list") == 0)
        return list(argv[2]);
    if (argc == 2 && argv[1][0] != '-')
        return write_forever(argv[1]);
    fprintf(stderr, "usage: tool_store_crash DB | tool_store_crash --list DB\n");
    return 2;
}
