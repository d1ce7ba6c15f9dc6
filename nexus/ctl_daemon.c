/* ctl_daemon.c — nexusctl's daemon commands, the shared part: options and environment
 * (NEXUS_ENDPOINT, NEXUS_CLIENT_KEY, NEXUS_SERVER_KEY), connecting with a ping probe so that a
 * daemon that is not running is one sentence and exit 2 within about two seconds, one
 * request/reply round trip, and the commands send, ping, load/evict/pin/unpin and keygen.
 * The listing commands are in ctl_show.c.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <czmq.h>

#include "ctl.h"
#include "ctl_daemon.h"

#define PING_TIMEOUT_MS 1500 /* the probe: a live daemon answers a ping in microseconds */

/* ---- options ------------------------------------------------------------------------------ */

typedef struct option {
    const char *name;
    unsigned bit; /* 0: allowed for every daemon command */
    bool takes_value;
} option_t;

static const option_t options[] = {
    {"--endpoint", 0, true},          {"--key", 0, true},
    {"--server-key", 0, true},        {"--timeout", 0, true},
    {"--json", NX__OPT_JSON, false},  {"--watch", NX__OPT_WATCH, false},
    {"--count", NX__OPT_COUNT, true}, {"--session", NX__OPT_SESSION, true},
    {"--no-stream", NX__OPT_NO_STREAM, false}, {"--agent", NX__OPT_AGENT, true},
    {"--limit", NX__OPT_LIMIT, true}, {"--json-schema", NX__OPT_CONSTRAINT, true},
    {"--json-object", NX__OPT_CONSTRAINT, false}, {"--grammar", NX__OPT_CONSTRAINT, true},
};

static int usage_error(const nx__ctl_args_t *a, const char *synopsis, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int usage_error(const nx__ctl_args_t *a, const char *synopsis, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "nexusctl %s: ", a->cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nusage: nexusctl %s %s\n", a->cmd, synopsis);
    va_end(ap);
    return NX_CTL_EXIT_USAGE;
}

/* Store one option's value; false when it is not valid. */
static bool set_option(nx__ctl_args_t *a, const char *name, const char *value)
{
    uint64_t n;
    if (strcmp(name, "--endpoint") == 0) a->endpoint = value;
    else if (strcmp(name, "--key") == 0) a->key = value;
    else if (strcmp(name, "--server-key") == 0) a->server_key = value;
    else if (strcmp(name, "--session") == 0) a->session = value;
    else if (strcmp(name, "--agent") == 0) a->agent = value;
    else if (strcmp(name, "--json") == 0) a->json = true;
    else if (strcmp(name, "--watch") == 0) a->watch = true;
    else if (strcmp(name, "--no-stream") == 0) a->no_stream = true;
    else if (strcmp(name, "--json-schema") == 0) a->json_schema = value, a->constraints++;
    else if (strcmp(name, "--grammar") == 0) a->grammar = value, a->constraints++;
    else if (strcmp(name, "--json-object") == 0) a->json_object = true, a->constraints++;
    else if (strcmp(name, "--count") == 0) return nx_cli_parse_u64(value, 1, 1000000, &a->count);
    else if (strcmp(name, "--limit") == 0) return nx_cli_parse_u64(value, 1, 1000, &a->limit);
    else if (strcmp(name, "--timeout") == 0) {
        if (!nx_cli_parse_u64(value, 1, 86400, &n))
            return false;
        a->timeout_ms = (int)(n * 1000);
    }
    return value == NULL || value[0] != 0;
}

static const char *option_hint(const char *name)
{
    if (strcmp(name, "--count") == 0) return "a whole number from 1";
    if (strcmp(name, "--limit") == 0) return "a whole number in 1..1000";
    if (strcmp(name, "--timeout") == 0) return "whole seconds in 1..86400";
    return "a non-empty value";
}

int nx__ctl_parse(int argc, char **argv, unsigned allowed, int positionals,
                  const char *synopsis, int default_timeout_ms, nx__ctl_args_t *a)
{
    memset(a, 0, sizeof *a);
    a->cmd = argv[0];
    a->timeout_ms = default_timeout_ms;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == 0) {
            if (a->positional_count >= positionals)
                return usage_error(a, synopsis, "unexpected argument '%s'%s", arg,
                                   positionals ? " (quote text with spaces)" : "");
            a->positional[a->positional_count++] = arg;
            continue;
        }
        const option_t *opt = NULL;
        for (size_t k = 0; k < sizeof options / sizeof options[0]; k++)
            if (strcmp(options[k].name, arg) == 0)
                opt = &options[k];
        if (!opt || (opt->bit && !(allowed & opt->bit)))
            return usage_error(a, synopsis, "unknown option '%s'", arg);
        const char *value = NULL;
        if (opt->takes_value) {
            if (i + 1 >= argc)
                return usage_error(a, synopsis, "%s needs a value", arg);
            value = argv[++i];
        }
        if (!set_option(a, arg, value))
            return usage_error(a, synopsis, "%s: '%s' is not %s", arg, value, option_hint(arg));
    }
    if (a->positional_count < positionals)
        return usage_error(a, synopsis, "missing argument");
    if (a->count && !a->watch)
        return usage_error(a, synopsis, "--count only applies with --watch");
    if (!a->endpoint) a->endpoint = getenv("NEXUS_ENDPOINT");
    if (!a->endpoint || !a->endpoint[0]) a->endpoint = NX_CLIENT_DEFAULT_ENDPOINT;
    if (!a->key) a->key = getenv("NEXUS_CLIENT_KEY");
    if (!a->server_key) a->server_key = getenv("NEXUS_SERVER_KEY");
    if (a->key && !a->key[0]) a->key = NULL;
    if (a->server_key && !a->server_key[0]) a->server_key = NULL;
    if (!a->key != !a->server_key)
        return usage_error(a, synopsis, "CURVE needs both --key (NEXUS_CLIENT_KEY) and "
                           "--server-key (NEXUS_SERVER_KEY)");
    return NX_CTL_EXIT_OK;
}

/* ---- connecting and one round trip ----------------------------------------------------- */

int nx__ctl_connect(const nx__ctl_args_t *a, nx_client_t **out)
{
    *out = NULL;
    nx_err_t err = {0};
    nx_client_t *client = nx_client_new(&(nx_client_opts_t){.endpoint = a->endpoint,
                                                            .client_cert = a->key,
                                                            .server_cert = a->server_key},
                                        &err);
    if (!client) {
        fprintf(stderr, "nexusctl: %s\n", err.msg);
        return NX_CTL_EXIT_USAGE;
    }
    int ping_ms = a->timeout_ms < PING_TIMEOUT_MS ? a->timeout_ms : PING_TIMEOUT_MS;
    int rc = nx_client_ping(client, ping_ms, NULL, 0, &err);
    if (rc == NX_ECANCELED) {
        fprintf(stderr, "nexusctl: interrupted\n");
    } else if (rc == NX_EFORMAT) {
        fprintf(stderr, "nexusctl: %s does not speak the nexusd protocol: %s\n", a->endpoint,
                err.msg);
    } else if (rc) {
        fprintf(stderr, "nexusctl: no nexusd answering at %s (start one with `make run`%s)\n",
                a->endpoint, nx_client_uses_curve(client)
                                 ? "; with CURVE, check that it accepts this client's key"
                                 : "");
    }
    if (rc) {
        nx_client_destroy(&client);
        return NX_CTL_EXIT_USAGE;
    }
    *out = client;
    return NX_CTL_EXIT_OK;
}

/* An "error" reply: print it; exit code 1. */
static int print_error_reply(const nx_client_reply_t *reply)
{
    char code[64], message[1024];
    nx_client_text(nx_client_field(reply->map, "code"), code, sizeof code);
    nx_client_text(nx_client_field(reply->map, "message"), message, sizeof message);
    fprintf(stderr, "nexusctl: %s: %s\n", code[0] ? code : "error", message);
    return NX_CTL_EXIT_FAIL;
}

static int print_recv_failure(const nx__ctl_args_t *a, int rc, const nx_err_t *err)
{
    if (rc == NX_ECANCELED)
        fprintf(stderr, "nexusctl: interrupted\n");
    else if (rc == NX_EIO)
        fprintf(stderr, "nexusctl: no reply from nexusd at %s within %d s (--timeout)\n",
                a->endpoint, a->timeout_ms / 1000);
    else
        fprintf(stderr, "nexusctl: %s\n", err->msg);
    return NX_CTL_EXIT_FAIL;
}

int nx__ctl_roundtrip(nx_client_t *client, const nx__ctl_args_t *a, nx_client_reply_t *reply)
{
    nx_err_t err = {0};
    int rc = nx_client_send(client, a->timeout_ms, &err);
    if (!rc)
        rc = nx_client_recv(client, a->timeout_ms, reply, &err);
    if (rc)
        return print_recv_failure(a, rc, &err);
    if (strcmp(reply->op, "error") == 0)
        return print_error_reply(reply);
    return NX_CTL_EXIT_OK;
}

int nx__ctl_print_json(const msgpack_object *map)
{
    json_t *j = nx_client_to_json(map);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(j);
    if (!text) {
        fprintf(stderr, "nexusctl: out of memory printing JSON\n");
        return NX_CTL_EXIT_FAIL;
    }
    printf("%s\n", text);
    free(text);
    fflush(stdout);
    return NX_CTL_EXIT_OK;
}

/* ---- send ---------------------------------------------------------------------------------- */

#define SEND_SYNOPSIS                                                                     \
    "AGENT TEXT [--session S] [--no-stream] [--json] [--timeout SECONDS]\n"                   \
    "         [--json-schema FILE | --json-object | --grammar FILE.gbnf]"

/* The task's own constraint from --json-schema / --json-object / --grammar (protocol.md:
 * Typed answers): the daemon compiles it and names what it refuses; a file that cannot be
 * read or parsed is this command's usage error, naming the file (and FILE:LINE:COL). */
static int write_constraint(const nx__ctl_args_t *a, nx_writer_t *w)
{
    if (a->constraints > 1) {
        fprintf(stderr, "nexusctl send: give only one of --json-schema, --json-object and "
                        "--grammar\n");
        return NX_CTL_EXIT_USAGE;
    }
    if (a->json_schema) {
        json_error_t e;
        json_t *schema = json_load_file(a->json_schema, JSON_REJECT_DUPLICATES, &e);
        if (!schema) {
            fprintf(stderr, "nexusctl send: %s:%d:%d: %s\n", a->json_schema, e.line, e.column,
                    e.text);
            return NX_CTL_EXIT_USAGE;
        }
        nx_writer_json(w, "schema", schema);
        json_decref(schema);
    } else if (a->json_object) {
        json_t *rf = json_pack("{s:s}", "type", "json_object");
        nx_writer_json(w, "response_format", rf);
        json_decref(rf);
    } else if (a->grammar) {
        size_t len = 0;
        char *text = NULL;
        FILE *f = fopen(a->grammar, "rb");
        if (f) {
            fseek(f, 0, SEEK_END);
            long size = ftell(f);
            rewind(f);
            text = size >= 0 && size <= (1L << 24) ? malloc((size_t)size + 1) : NULL;
            len = text ? fread(text, 1, (size_t)size, f) : 0;
            if (text)
                text[len] = '\0';
            fclose(f);
        }
        if (!text) {
            fprintf(stderr, "nexusctl send: %s: %s\n", a->grammar,
                    f ? "larger than 16 MiB" : strerror(errno));
            return NX_CTL_EXIT_USAGE;
        }
        nx_writer_str(w, "grammar", text);
        free(text);
    }
    return NX_CTL_EXIT_OK;
}

/* Print one streamed piece, or the final result; returns true when the task is over. */
#define EXIT_INTERRUPTED 130 /* 128 + SIGINT, as shells report it */

static bool on_task_reply(const nx__ctl_args_t *a, const nx_client_reply_t *reply, int *exit_code,
                          bool *streamed, int64_t *task_id)
{
    if (strcmp(reply->op, "accepted") == 0) {
        double id;
        if (nx_client_number(nx_client_field(reply->map, "task"), &id))
            *task_id = (int64_t)id;
        return false;
    }
    if (strcmp(reply->op, "canceled") == 0) { /* the answer to our own cancel (Ctrl-C) */
        if (*streamed)
            fputc('\n', stdout);
        fflush(stdout);
        fprintf(stderr, "nexusctl: canceled task %lld\n", (long long)*task_id);
        *exit_code = EXIT_INTERRUPTED;
        return true;
    }
    if (strcmp(reply->op, "token") == 0) {
        const msgpack_object *text = nx_client_field(reply->map, "text");
        if (!a->json && text && text->type == MSGPACK_OBJECT_STR) {
            fwrite(text->via.str.ptr, 1, text->via.str.size, stdout);
            fflush(stdout);
            *streamed = true;
        }
        return false;
    }
    if (strcmp(reply->op, "result") == 0) {
        if (a->json) {
            *exit_code = nx__ctl_print_json(reply->map);
        } else {
            const msgpack_object *out = nx_client_field(reply->map, "output");
            if (!*streamed && out && out->type == MSGPACK_OBJECT_STR)
                fwrite(out->via.str.ptr, 1, out->via.str.size, stdout);
            fputc('\n', stdout);
            fflush(stdout);
            *exit_code = NX_CTL_EXIT_OK;
        }
        return true;
    }
    if (strcmp(reply->op, "error") == 0) {
        if (*streamed)
            fputc('\n', stdout);
        fflush(stdout);
        *exit_code = print_error_reply(reply);
        return true;
    }
    fprintf(stderr, "nexusctl: unexpected reply '%s' to a task\n", reply->op);
    *exit_code = NX_CTL_EXIT_FAIL;
    return true;
}

int nx_ctl_send(int argc, char **argv)
{
    nx__ctl_args_t a;
    int code = nx__ctl_parse(argc, argv,
                             NX__OPT_JSON | NX__OPT_SESSION | NX__OPT_NO_STREAM |
                                 NX__OPT_CONSTRAINT,
                             2, SEND_SYNOPSIS, 600 * 1000, &a);
    if (code)
        return code;
    if (a.constraints > 1)
        return write_constraint(&a, NULL);
    nx_client_t *client;
    if ((code = nx__ctl_connect(&a, &client)))
        return code;
    nx_writer_t *w = nx_client_begin(client, "task");
    nx_writer_str(w, "agent", a.positional[0]);
    nx_writer_str(w, "input", a.positional[1]);
    if (a.session)
        nx_writer_str(w, "session", a.session);
    nx_writer_bool(w, "stream", !a.no_stream);
    if ((code = write_constraint(&a, w))) {
        nx_client_destroy(&client);
        return code;
    }
    nx_err_t err = {0};
    int rc = nx_client_send(client, a.timeout_ms, &err);
    uint64_t deadline_ns = nx_now_ns() + (uint64_t)a.timeout_ms * 1000000u;
    bool streamed = false, over = false, canceling = false;
    int64_t task_id = 0;
    nx_client_reply_t reply = {0};
    while (!rc && !over) {
        uint64_t now = nx_now_ns();
        int left_ms = now >= deadline_ns ? 0 : (int)((deadline_ns - now) / 1000000u);
        rc = nx_client_recv(client, left_ms, &reply, &err);
        if (!rc) {
            over = on_task_reply(&a, &reply, &code, &streamed, &task_id);
        } else if (rc == NX_ECANCELED && task_id > 0 && !canceling) {
            /* Ctrl-C while the task runs: cancel it on the daemon, then wait (briefly) for
             * the daemon to confirm, rather than leave it generating for nobody. */
            zsys_interrupted = 0;
            canceling = true;
            nx_writer_int(nx_client_begin(client, "cancel"), "task", task_id);
            rc = nx_client_send(client, 2000, &err);
            deadline_ns = nx_now_ns() + 5000ull * 1000000u;
        }
    }
    if (rc == NX_ECANCELED && !canceling) {
        if (streamed)
            fputc('\n', stdout);
        fprintf(stderr, "nexusctl: interrupted before the task was accepted\n");
        nx_client_reply_clear(&reply);
        nx_client_destroy(&client);
        return EXIT_INTERRUPTED;
    }
    if (rc) {
        if (streamed)
            fputc('\n', stdout);
        code = print_recv_failure(&a, rc, &err);
    }
    nx_client_reply_clear(&reply);
    nx_client_destroy(&client);
    return code;
}

/* ---- ping, load/evict/pin/unpin ---------------------------------------------------------- */

int nx_ctl_ping(int argc, char **argv)
{
    nx__ctl_args_t a;
    int code = nx__ctl_parse(argc, argv, NX__OPT_JSON, 0, "[--json]", 10 * 1000, &a);
    if (code)
        return code;
    nx_client_t *client;
    if ((code = nx__ctl_connect(&a, &client)))
        return code;
    uint64_t start = nx_now_ns();
    nx_client_begin(client, "ping");
    nx_client_reply_t reply = {0};
    code = nx__ctl_roundtrip(client, &a, &reply);
    double ms = (double)(nx_now_ns() - start) / 1e6;
    if (!code && a.json) {
        code = nx__ctl_print_json(reply.map);
    } else if (!code) {
        char version[64];
        nx_client_text(nx_client_field(reply.map, "version"), version, sizeof version);
        printf("pong from %s: nexusd %s in %.2f ms\n", a.endpoint, version[0] ? version : "?",
               ms);
    }
    nx_client_reply_clear(&reply);
    nx_client_destroy(&client);
    return code;
}

int nx_ctl_model_cmd(int argc, char **argv)
{
    nx__ctl_args_t a;
    /* a load answers once the model is resident: give it time */
    int code = nx__ctl_parse(argc, argv, NX__OPT_JSON, 1, "MODEL [--json] [--timeout SECONDS]",
                             300 * 1000, &a);
    if (code)
        return code;
    nx_client_t *client;
    if ((code = nx__ctl_connect(&a, &client)))
        return code;
    nx_writer_str(nx_client_begin(client, a.cmd), "model", a.positional[0]);
    nx_client_reply_t reply = {0};
    code = nx__ctl_roundtrip(client, &a, &reply);
    if (!code && a.json) {
        code = nx__ctl_print_json(reply.map);
    } else if (!code) {
        char model[256], state[32];
        nx_client_text(nx_client_field(reply.map, "model"), model, sizeof model);
        nx_client_text(nx_client_field(reply.map, "state"), state, sizeof state);
        printf("%s: %s\n", model[0] ? model : a.positional[0], state[0] ? state : reply.op);
    }
    nx_client_reply_clear(&reply);
    nx_client_destroy(&client);
    return code;
}

/* ---- keygen ------------------------------------------------------------------------------- */

int nx_ctl_keygen(int argc, char **argv)
{
    const char *dir = NULL, *name = "client";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
            name = argv[++i];
        } else if (strncmp(argv[i], "--", 2) == 0 || dir) {
            fprintf(stderr, "nexusctl keygen: %s '%s'\nusage: nexusctl keygen DIR [--name NAME]\n",
                    strcmp(argv[i], "--name") == 0 ? "--name needs a value" :
                    strncmp(argv[i], "--", 2) == 0 ? "unknown option" : "unexpected argument",
                    argv[i]);
            return NX_CTL_EXIT_USAGE;
        } else {
            dir = argv[i];
        }
    }
    if (!dir || !name[0] || strchr(name, '/')) {
        fprintf(stderr, "nexusctl keygen: %s\nusage: nexusctl keygen DIR [--name NAME]\n",
                !dir ? "missing DIR" : "NAME must be a plain file name");
        return NX_CTL_EXIT_USAGE;
    }
    char public_path[4096], secret_path[4096 + 8];
    snprintf(public_path, sizeof public_path, "%s/%s.key", dir, name);
    snprintf(secret_path, sizeof secret_path, "%s_secret", public_path);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "nexusctl keygen: '%s' is not a directory\n", dir);
        return NX_CTL_EXIT_FAIL;
    }
    if (access(public_path, F_OK) == 0 || access(secret_path, F_OK) == 0) {
        fprintf(stderr, "nexusctl keygen: '%s' already exists; not overwriting a key pair\n",
                access(public_path, F_OK) == 0 ? public_path : secret_path);
        return NX_CTL_EXIT_FAIL;
    }
    zcert_t *cert = zcert_new();
    if (!cert) {
        fprintf(stderr, "nexusctl keygen: cannot make a key pair (is libzmq built with CURVE?)\n");
        return NX_CTL_EXIT_FAIL;
    }
    zcert_set_meta(cert, "name", "%s", name);
    int code = NX_CTL_EXIT_OK;
    /* zcert_save writes NAME.key (public) and NAME.key_secret: only we may read the latter */
    mode_t old_mask = umask(077);
    int saved = zcert_save(cert, public_path);
    umask(old_mask);
    if (saved == 0)
        chmod(public_path, 0644);
    if (saved != 0) {
        fprintf(stderr, "nexusctl keygen: cannot write '%s': %s\n", public_path,
                strerror(errno));
        code = NX_CTL_EXIT_FAIL;
    } else {
        printf("%s\n", zcert_public_txt(cert));
    }
    zcert_destroy(&cert);
    return code;
}
