/* ctl_show.c — nexusctl's listing commands against a running nexusd: status (with --watch),
 * agents, models, tasks, history. Each prints the daemon's reply as JSON with --json and as
 * an aligned table otherwise; the table code is a few functions at the top.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <czmq.h>

#include "ctl.h"
#include "ctl_daemon.h"

/* ---- an aligned table --------------------------------------------------------------------- */

#define TABLE_COLS_MAX 12
#define CELL_MAX 256

typedef struct table {
    size_t cols, rows, cap;
    char (*cells)[CELL_MAX]; /* rows x cols */
} table_t;

/* Display width of UTF-8 text: code points (wide characters are rare in names). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

/* Add a row of t->cols strings (NULL prints as "-"); newlines and tabs become spaces. */
static void table_row(table_t *t, ...)
{
    if (t->rows == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        void *cells = realloc(t->cells, cap * t->cols * sizeof *t->cells);
        if (!cells)
            return; /* out of memory: the row is dropped, the rest still prints */
        t->cells = cells;
        t->cap = cap;
    }
    va_list ap;
    va_start(ap, t);
    for (size_t c = 0; c < t->cols; c++) {
        const char *v = va_arg(ap, const char *);
        char *cell = t->cells[t->rows * t->cols + c];
        snprintf(cell, CELL_MAX, "%s", v && v[0] ? v : "-");
        for (char *p = cell; *p; p++)
            if (*p == '\n' || *p == '\t' || *p == '\r')
                *p = ' ';
    }
    va_end(ap);
    t->rows++;
}

static void table_print(table_t *t)
{
    size_t width[TABLE_COLS_MAX] = {0};
    for (size_t r = 0; r < t->rows; r++)
        for (size_t c = 0; c < t->cols; c++) {
            size_t w = text_width(t->cells[r * t->cols + c]);
            width[c] = w > width[c] ? w : width[c];
        }
    for (size_t r = 0; r < t->rows; r++) {
        for (size_t c = 0; c < t->cols; c++) {
            const char *cell = t->cells[r * t->cols + c];
            if (c + 1 == t->cols)
                printf("%s\n", cell);
            else
                printf("%s%*s", cell, (int)(width[c] - text_width(cell) + 2), "");
        }
    }
    free(t->cells);
    t->cells = NULL;
    t->rows = t->cap = 0;
}

/* ---- reading reply fields into text ----------------------------------------------------- */

typedef char cell_t[CELL_MAX];

static const char *f_text(const msgpack_object *o, const char *key, cell_t out)
{
    return nx_client_text(nx_client_field(o, key), out, CELL_MAX);
}

static const char *f_num(const msgpack_object *o, const char *key, const char *fmt, cell_t out)
{
    double v;
    out[0] = 0;
    if (nx_client_number(nx_client_field(o, key), &v))
        snprintf(out, CELL_MAX, fmt, v);
    return out;
}

static const char *f_bool(const msgpack_object *o, const char *key, cell_t out)
{
    const msgpack_object *v = nx_client_field(o, key);
    snprintf(out, CELL_MAX, "%s", v && v->type == MSGPACK_OBJECT_BOOLEAN
                                      ? (v->via.boolean ? "yes" : "no") : "");
    return out;
}

static const char *f_bytes(const msgpack_object *o, const char *key, cell_t out)
{
    double v;
    out[0] = 0;
    if (nx_client_number(nx_client_field(o, key), &v) && v >= 0)
        nx_cli_format_bytes((uint64_t)v, out, CELL_MAX);
    return out;
}

/* "850 ms ago", "12 s ago", "5 min ago", "3 h ago"; "never" when negative. */
static const char *f_ago(const msgpack_object *o, const char *key, cell_t out)
{
    double ms;
    out[0] = 0;
    if (!nx_client_number(nx_client_field(o, key), &ms))
        return out;
    if (ms < 0) snprintf(out, CELL_MAX, "never");
    else if (ms < 1000) snprintf(out, CELL_MAX, "%.0f ms ago", ms);
    else if (ms < 120e3) snprintf(out, CELL_MAX, "%.0f s ago", ms / 1e3);
    else if (ms < 7200e3) snprintf(out, CELL_MAX, "%.0f min ago", ms / 60e3);
    else snprintf(out, CELL_MAX, "%.0f h ago", ms / 3600e3);
    return out;
}

/* Unix seconds as local "YYYY-MM-DD HH:MM:SS". */
static const char *f_time(const msgpack_object *o, const char *key, cell_t out)
{
    double at;
    out[0] = 0;
    if (!nx_client_number(nx_client_field(o, key), &at) || at <= 0)
        return out;
    time_t t = (time_t)at;
    struct tm tm;
    if (localtime_r(&t, &tm))
        strftime(out, CELL_MAX, "%Y-%m-%d %H:%M:%S", &tm);
    return out;
}

/* A list of strings joined by ", ". */
static const char *f_list(const msgpack_object *o, const char *key, cell_t out)
{
    const msgpack_object *v = nx_client_field(o, key);
    out[0] = 0;
    if (!v || v->type != MSGPACK_OBJECT_ARRAY)
        return out;
    size_t at = 0;
    for (uint32_t i = 0; i < v->via.array.size && at < CELL_MAX - 1; i++) {
        cell_t one;
        nx_client_text(&v->via.array.ptr[i], one, CELL_MAX);
        at += (size_t)snprintf(out + at, CELL_MAX - at, "%s%s", i ? ", " : "", one);
    }
    return out;
}

/* The array under key, or NULL. */
static const msgpack_object *f_array(const msgpack_object *o, const char *key)
{
    const msgpack_object *v = nx_client_field(o, key);
    return v && v->type == MSGPACK_OBJECT_ARRAY ? v : NULL;
}

/* ---- status and models ----------------------------------------------------------------- */

static void print_models(const msgpack_object *reply)
{
    table_t t = {.cols = 11};
    table_row(&t, "MODEL", "STATE", "SIZE", "LAST USED", "LOADS", "LAST SWAP", "QUEUE",
              "RUNNING", "PIN", "AGENTS", "SOURCE");
    const msgpack_object *models = f_array(reply, "models");
    for (uint32_t i = 0; models && i < models->via.array.size; i++) {
        const msgpack_object *m = &models->via.array.ptr[i];
        cell_t name, state, size, used, loads, swap, queue, running, pin, agents, source;
        double swap_ms;
        f_num(m, "last_swap_ms", "%.0f ms", swap);
        if (nx_client_number(nx_client_field(m, "last_swap_ms"), &swap_ms) && swap_ms < 0)
            swap[0] = 0;
        table_row(&t, f_text(m, "name", name), f_text(m, "state", state),
                  f_bytes(m, "bytes", size), f_ago(m, "last_used_ms_ago", used),
                  f_num(m, "loads", "%.0f", loads), swap, f_num(m, "queue", "%.0f", queue),
                  f_num(m, "running", "%.0f", running), f_bool(m, "pinned", pin),
                  f_list(m, "agents", agents), f_text(m, "source", source));
    }
    table_print(&t);
}

/* "[##########..........]" for used/total. */
static void print_bar(double used, double total)
{
    enum { WIDTH = 30 };
    int filled = total > 0 ? (int)(used / total * WIDTH + 0.5) : 0;
    filled = filled < 0 ? 0 : filled > WIDTH ? WIDTH : filled;
    putchar('[');
    for (int i = 0; i < WIDTH; i++)
        putchar(i < filled ? '#' : '.');
    printf("] %3.0f%%\n", total > 0 ? 100.0 * used / total : 0.0);
}

static void print_status(const msgpack_object *reply)
{
    const msgpack_object *pool = nx_client_field(reply, "pool");
    const msgpack_object *cache = nx_client_field(reply, "host_cache");
    cell_t device, used, total, entries;
    double used_b = 0, total_b = 0;
    nx_client_number(nx_client_field(pool, "used_bytes"), &used_b);
    nx_client_number(nx_client_field(pool, "total_bytes"), &total_b);
    printf("pool        %s  %s / %s  ", f_text(pool, "device", device),
           f_bytes(pool, "used_bytes", used), f_bytes(pool, "total_bytes", total));
    print_bar(used_b, total_b);
    double budget = 0;
    if (cache && nx_client_number(nx_client_field(cache, "budget_bytes"), &budget) &&
        budget <= 0) {
        printf("host cache  off\n");
    } else if (cache) {
        printf("host cache  %s / %s  (%s entries)\n", f_bytes(cache, "used_bytes", used),
               f_bytes(cache, "budget_bytes", total), f_num(cache, "entries", "%.0f", entries));
    }
    putchar('\n');
    print_models(reply);
}

/* One status request: printed, or the exit code of the failure. */
static int status_once(nx_client_t *client, const nx__ctl_args_t *a, bool clear_screen)
{
    nx_client_begin(client, "status");
    nx_client_reply_t reply = {0};
    int code = nx__ctl_roundtrip(client, a, &reply);
    if (!code && a->json) {
        code = nx__ctl_print_json(reply.map);
    } else if (!code) {
        if (clear_screen)
            fputs("\033[H\033[2J", stdout);
        print_status(reply.map);
        fflush(stdout);
    }
    nx_client_reply_clear(&reply);
    return code;
}

/* Sleep ms in small steps so that Ctrl-C (czmq sets zsys_interrupted) ends the wait. */
static void sleep_interruptibly(int ms)
{
    for (int slept = 0; slept < ms && !zsys_interrupted; slept += 50) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int nx_ctl_status(int argc, char **argv)
{
    nx__ctl_args_t a;
    int code = nx__ctl_parse(argc, argv, NX__OPT_JSON | NX__OPT_WATCH | NX__OPT_COUNT, 0,
                             "[--watch [--count N]] [--json]", 10 * 1000, &a);
    if (code)
        return code;
    nx_client_t *client;
    if ((code = nx__ctl_connect(&a, &client)))
        return code;
    /* clear the screen between refreshes only on a terminal: piped into a file or another
     * program, --watch is a plain sequence of tables */
    bool clear_screen = a.watch && !a.json && isatty(STDOUT_FILENO);
    for (uint64_t n = 1;; n++) {
        if (n > 1 && a.watch && !a.json && !clear_screen)
            putchar('\n'); /* a blank line between the tables instead */
        code = status_once(client, &a, clear_screen);
        if (code || !a.watch || (a.count && n >= a.count) || zsys_interrupted)
            break;
        sleep_interruptibly(1000);
        if (zsys_interrupted)
            break;
    }
    nx_client_destroy(&client);
    return code;
}

/* ---- the other listings ---------------------------------------------------------------- */

typedef void (*print_fn)(const msgpack_object *reply);

/* Connect, send the request `op` (+ fields from a), print with --json or `print`. */
static int listing(const nx__ctl_args_t *a, const char *op, print_fn print)
{
    nx_client_t *client;
    int code = nx__ctl_connect(a, &client);
    if (code)
        return code;
    nx_writer_t *w = nx_client_begin(client, op);
    if (strcmp(op, "tasks") == 0) {
        if (a->agent)
            nx_writer_str(w, "agent", a->agent);
        if (a->limit)
            nx_writer_uint(w, "limit", a->limit);
    } else if (strcmp(op, "history") == 0) {
        nx_writer_str(w, "session", a->positional[0]);
    }
    nx_client_reply_t reply = {0};
    code = nx__ctl_roundtrip(client, a, &reply);
    if (!code && a->json)
        code = nx__ctl_print_json(reply.map);
    else if (!code)
        print(reply.map);
    nx_client_reply_clear(&reply);
    nx_client_destroy(&client);
    return code;
}

static void print_agents(const msgpack_object *reply)
{
    table_t t = {.cols = 8};
    table_row(&t, "AGENT", "MODEL", "QUEUE", "RUNNING", "PIN", "PRIORITY", "NEXT",
              "DESCRIPTION");
    const msgpack_object *agents = f_array(reply, "agents");
    for (uint32_t i = 0; agents && i < agents->via.array.size; i++) {
        const msgpack_object *g = &agents->via.array.ptr[i];
        cell_t name, model, queue, running, pin, priority, next, description;
        table_row(&t, f_text(g, "name", name), f_text(g, "model", model),
                  f_num(g, "queue", "%.0f", queue), f_num(g, "running", "%.0f", running),
                  f_bool(g, "pin", pin), f_num(g, "priority", "%.0f", priority),
                  f_text(g, "next", next), f_text(g, "description", description));
    }
    table_print(&t);
}

static void print_tasks(const msgpack_object *reply)
{
    table_t t = {.cols = 10};
    table_row(&t, "TASK", "AGENT", "STATUS", "SESSION", "CREATED", "QUEUE", "SWAP", "TTFT",
              "TOTAL", "ERROR");
    const msgpack_object *tasks = f_array(reply, "tasks");
    for (uint32_t i = 0; tasks && i < tasks->via.array.size; i++) {
        const msgpack_object *k = &tasks->via.array.ptr[i];
        const msgpack_object *tm = nx_client_field(k, "timings");
        cell_t id, agent, status, session, created, queue, swap, ttft, total, error;
        table_row(&t, f_num(k, "task", "%.0f", id), f_text(k, "agent", agent),
                  f_text(k, "status", status), f_text(k, "session", session),
                  f_time(k, "created_at", created), f_num(tm, "queue_ms", "%.0f ms", queue),
                  f_num(tm, "swap_ms", "%.0f ms", swap), f_num(tm, "ttft_ms", "%.0f ms", ttft),
                  f_num(tm, "total_ms", "%.0f ms", total), f_text(k, "error", error));
    }
    table_print(&t);
}

static void print_history(const msgpack_object *reply)
{
    table_t t = {.cols = 5};
    table_row(&t, "AT", "ROLE", "AGENT", "TASK", "CONTENT");
    const msgpack_object *messages = f_array(reply, "messages");
    for (uint32_t i = 0; messages && i < messages->via.array.size; i++) {
        const msgpack_object *m = &messages->via.array.ptr[i];
        cell_t at, role, agent, task, content;
        table_row(&t, f_time(m, "at", at), f_text(m, "role", role), f_text(m, "agent", agent),
                  f_num(m, "task", "%.0f", task), f_text(m, "content", content));
    }
    table_print(&t);
}

int nx_ctl_agents(int argc, char **argv)
{
    nx__ctl_args_t a;
    int code = nx__ctl_parse(argc, argv, NX__OPT_JSON, 0, "[--json]", 10 * 1000, &a);
    return code ? code : listing(&a, "agents", print_agents);
}

int nx_ctl_models(int argc, char **argv)
{
    nx__ctl_args_t a;
    int code = nx__ctl_parse(argc, argv, NX__OPT_JSON, 0, "[--json]", 10 * 1000, &a);
    return code ? code : listing(&a, "models", print_models);
}

int nx_ctl_tasks(int argc, char **argv)
{
    nx__ctl_args_t a;
    int code = nx__ctl_parse(argc, argv, NX__OPT_JSON | NX__OPT_AGENT | NX__OPT_LIMIT, 0,
                             "[--agent A] [--limit N] [--json]", 10 * 1000, &a);
    return code ? code : listing(&a, "tasks", print_tasks);
}

int nx_ctl_history(int argc, char **argv)
{
    nx__ctl_args_t a;
    int code = nx__ctl_parse(argc, argv, NX__OPT_JSON, 1, "SESSION [--json]", 10 * 1000, &a);
    return code ? code : listing(&a, "history", print_history);
}
