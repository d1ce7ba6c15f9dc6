/* ctl_daemon.h — nexusctl's commands that talk to a running nexusd (ctl_daemon.c: options,
 * connecting, send, ping, load/evict/pin/unpin, keygen; ctl_show.c: status, agents, models,
 * tasks, history). Each takes the arguments after its own name (argv[0] is the command's name)
 * and returns the exit code: 0 success, 1 the daemon answered with an error (or stopped
 * answering mid-request), 2 a usage error or no daemon answering at the endpoint.
 */
#ifndef NX_CTL_DAEMON_H
#define NX_CTL_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include "client.h"

int nx_ctl_status(int argc, char **argv);
int nx_ctl_send(int argc, char **argv);
int nx_ctl_agents(int argc, char **argv);
int nx_ctl_models(int argc, char **argv);
int nx_ctl_model_cmd(int argc, char **argv); /* load, evict, pin, unpin: argv[0] says which */
int nx_ctl_tasks(int argc, char **argv);
int nx_ctl_history(int argc, char **argv);
int nx_ctl_ping(int argc, char **argv);
int nx_ctl_keygen(int argc, char **argv);

/* ---- shared between ctl_daemon.c and ctl_show.c ---------------------------------------- */

/* Options a command may accept, beside --endpoint, --key, --server-key and --timeout. */
enum {
    NX__OPT_JSON = 1 << 0,
    NX__OPT_WATCH = 1 << 1,
    NX__OPT_COUNT = 1 << 2,
    NX__OPT_SESSION = 1 << 3,
    NX__OPT_NO_STREAM = 1 << 4,
    NX__OPT_AGENT = 1 << 5,
    NX__OPT_LIMIT = 1 << 6,
    NX__OPT_CONSTRAINT = 1 << 7, /* --json-schema FILE, --json-object, --grammar FILE */
};

typedef struct nx__ctl_args {
    const char *cmd;                       /* the command's name, for messages */
    const char *endpoint, *key, *server_key; /* options, else environment, else defaults */
    const char *positional[2];
    int positional_count;
    bool json, watch, no_stream;
    const char *session, *agent;
    const char *json_schema, *grammar; /* --json-schema FILE, --grammar FILE */
    bool json_object;
    int constraints;                       /* how many of the three were given */
    uint64_t count;                        /* --count: refreshes of --watch (0: no limit) */
    uint64_t limit;                        /* --limit (0: the daemon's default) */
    int timeout_ms;                        /* --timeout, or the command's default */
} nx__ctl_args_t;

/* Parse argv for a command taking `positionals` positional arguments and the `allowed`
 * options; prints the problem and returns NX_CTL_EXIT_USAGE, or NX_CTL_EXIT_OK. */
int nx__ctl_parse(int argc, char **argv, unsigned allowed, int positionals,
                  const char *synopsis, int default_timeout_ms, nx__ctl_args_t *a);

/* Connect and ping. On failure prints the sentence and returns the exit code (2) with *out
 * NULL; on success *out is the connected client. */
int nx__ctl_connect(const nx__ctl_args_t *a, nx_client_t **out);

/* Send the request begun on the client and wait for its first reply. Prints the problem and
 * returns an exit code (1) on failure; an "error" reply prints "nexusctl: CODE: MESSAGE" and
 * returns 1 too. */
int nx__ctl_roundtrip(nx_client_t *client, const nx__ctl_args_t *a, nx_client_reply_t *reply);

/* Print the reply map as one line of JSON on stdout. */
int nx__ctl_print_json(const msgpack_object *map);

#endif
