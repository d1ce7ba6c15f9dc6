/* nexusd.c — the orchestrator daemon's main: read the configuration, open the store, recover
 * what a crash left unfinished, start the executor, bind the sockets (with CURVE when keys are
 * configured), then run the router on this thread until SIGINT/SIGTERM, and stop cleanly:
 * no new tasks, queued and running ones failed with shutting_down (stored and answered), the
 * store closed.
 *
 *   nexusd [--config FILE] [--policy cost|lru] [--check]
 *
 * --check reads the configuration as start-up does, then also opens every agent's model
 * (headers, config and tokenizer; no weights), sizes the pool against this machine and tries
 * the home for writing (daemon_check.c); it leaves nothing behind.
 *
 * Exit codes: 0 clean stop (or --check passed), 1 the configuration or start-up failed (the
 * message says what and where), 2 a usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "http/http.h"

/* The HTTP front's way into the router: a second endpoint of its ROUTER socket. */
#define HTTP_ROUTER_ENDPOINT "inproc://nexusd-http"

typedef struct args {
    const char *config;
    nx_policy_t policy;
    bool check;
} args_t;

static void usage(FILE *out)
{
    fprintf(out, "usage: nexusd [--config FILE] [--policy cost|lru] [--check]\n"
                 "  --config FILE   the daemon's nexus.yaml (default configs/nexus.yaml)\n"
                 "  --policy P      eviction policy: cost (default) or lru (for comparison)\n"
                 "  --check         validate the configuration, print the verdict, exit 0/1\n");
}

static int parse_args(int argc, char **argv, args_t *a)
{
    *a = (args_t){.config = "configs/nexus.yaml", .policy = NX_POLICY_COST};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(arg, "--check") == 0) {
            a->check = true;
        } else if (strcmp(arg, "--config") == 0 && i + 1 < argc) {
            a->config = argv[++i];
        } else if (strcmp(arg, "--policy") == 0 && i + 1 < argc) {
            const char *p = argv[++i];
            if (strcmp(p, "cost") == 0)
                a->policy = NX_POLICY_COST;
            else if (strcmp(p, "lru") == 0)
                a->policy = NX_POLICY_LRU;
            else {
                fprintf(stderr, "nexusd: --policy: expected cost or lru, got '%s'\n", p);
                return -1;
            }
        } else {
            fprintf(stderr, "nexusd: unknown or incomplete option '%s'\n", arg);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Start-up steps
 */
/* An agent file's text for the agents table. It was read as a regular file moments ago;
 * should it have been swapped for a FIFO since, O_NONBLOCK and the fstat keep this from
 * waiting forever (the text is then stored empty). */
static char *read_text(const char *path)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        return NULL;
    }
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[8192];
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (!buf)
        buf = calloc(1, 1);
    else
        buf[len] = '\0';
    return buf;
}

/* Binding off loopback needs CURVE: both keys, so no client is served unauthenticated. */
static int check_security(const nx_nexus_conf_t *conf, nx_err_t *err)
{
    const char *endpoints[2] = {conf->listen, conf->events};
    const char *names[2] = {"listen", "events"};
    for (int i = 0; i < 2; i++) {
        if (nx_endpoint_is_loopback(endpoints[i]))
            continue;
        if (!conf->curve_secret_key || !conf->curve_clients)
            return nx_err_set(err, NX_EINVAL,
                              "%s: %s '%s' is not a loopback address: binding there needs "
                              "CURVE keys: set curve.secret_key (a certificate written by "
                              "`nexusctl keygen`) and curve.clients (a folder of allowed "
                              "client certificates)",
                              conf->source_path, names[i], endpoints[i]);
    }
    return NX_OK;
}

/* Every task a crash left accepted or running is marked failed with the reason (the end kept
 * aside in nexus.db-ends when the disk was full, else "interrupted by a restart"): its client
 * is gone (nobody would receive a result), and a half-run pipeline stage is not replayed
 * behind the user's back. The rows stay listed by `tasks` with that reason. */
static int recover_unfinished(nx_store_t *store, nx_err_t *err)
{
    /* First the ends the last run could not store (a full disk): their reason is the real
     * one, so they are stored before the rest is marked interrupted. */
    nx_store_ends_t *ends = nx_store_ends_open(nx_store_path(store), err);
    if (!ends)
        return err->code;
    int rc = nx_store_ends_flush(ends, store, err);
    nx_store_ends_close(&ends);
    if (rc != NX_OK)
        return rc;
    nx_task_row_t *rows = NULL;
    size_t count = 0;
    rc = nx_store_tasks_unfinished(store, &rows, &count, err);
    if (rc != NX_OK || count == 0)
        goto out;
    if ((rc = nx_store_begin(store, err)) != NX_OK)
        goto out;
    for (size_t i = 0; i < count && rc == NX_OK; i++) {
        char reason[160];
        snprintf(reason, sizeof reason,
                 "interrupted by a restart: the task was %s when nexusd stopped",
                 nx_task_status_name(rows[i].status));
        nx_task_timings_t none = {0};
        rc = nx_store_task_finish(store, rows[i].id, NX_TASK_FAILED, NULL, "shutting_down",
                                  reason, &none, 0, 0, err);
    }
    if (rc == NX_OK)
        rc = nx_store_commit(store, err);
    else
        nx_store_rollback(store);
    if (rc == NX_OK)
        nx_log(NX_LOG_INFO, "nexusd: %zu unfinished tasks from the last run marked failed "
               "(interrupted by a restart)", count);
out:
    nx_task_rows_free(rows, count);
    return rc;
}

static int record_agents(nx_store_t *store, const nx_nexus_conf_t *conf, nx_err_t *err)
{
    int rc = nx_store_begin(store, err);
    for (size_t i = 0; i < conf->agent_count && rc == NX_OK; i++) {
        const nx_agent_conf_t *a = &conf->agents[i];
        char *text = a->source_path ? read_text(a->source_path) : NULL;
        rc = nx_store_put_agent(store, a->name, text ? text : "", a->hash, a->model, err);
        free(text);
    }
    if (rc == NX_OK)
        return nx_store_commit(store, err);
    nx_store_rollback(store);
    return rc;
}

static int record_models(nx_store_t *store, nx_exec_t *exec, nx_err_t *err)
{
    nx_exec_status_t st = {0};
    int rc = nx_exec_status(exec, &st, err);
    if (rc == NX_OK)
        rc = nx_store_begin(store, err);
    for (size_t i = 0; i < st.model_count && rc == NX_OK; i++)
        rc = nx_store_put_model(store, st.models[i].name, st.models[i].path, st.models[i].bytes,
                                err);
    if (rc == NX_OK)
        rc = nx_store_commit(store, err);
    nx_exec_status_clear(&st);
    return rc;
}

static nx_store_t *open_store(const nx_nexus_conf_t *conf, nx_err_t *err)
{
    if (mkdir(conf->home, 0700) != 0 && errno != EEXIST) {
        nx_err_set(err, NX_EIO, "home '%s': cannot create it: %s", conf->home, strerror(errno));
        return NULL;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/nexus.db", conf->home);
    return nx_store_open(path, err);
}

/* ------------------------------------------------------------------------------------------
 * Sockets
 */
static int setup_curve(const nx_nexus_conf_t *conf, zsock_t *router, zsock_t *pub,
                       zactor_t **auth_out, nx_err_t *err)
{
    if (!conf->curve_secret_key)
        return NX_OK;
    struct stat st;
    if (!conf->curve_clients || stat(conf->curve_clients, &st) != 0 || !S_ISDIR(st.st_mode))
        return nx_err_set(err, NX_EINVAL, "curve.clients '%s': not a folder of client "
                          "certificates", conf->curve_clients ? conf->curve_clients : "(unset)");
    zcert_t *cert = zcert_load(conf->curve_secret_key);
    static const unsigned char zero[32];
    if (!cert || memcmp(zcert_secret_key(cert), zero, 32) == 0) {
        zcert_destroy(&cert);
        return nx_err_set(err, NX_EINVAL, "curve.secret_key '%s': not a czmq certificate with "
                          "a secret key (write one with `nexusctl keygen`)",
                          conf->curve_secret_key);
    }
    /* zauth answers ZAP for every socket of czmq's context: only listed client keys pass. */
    zactor_t *auth = zactor_new(zauth, NULL);
    if (!auth) {
        zcert_destroy(&cert);
        return nx_err_set(err, NX_ENOMEM, "curve: cannot start the authenticator");
    }
    zstr_sendx(auth, "CURVE", conf->curve_clients, NULL);
    zsock_wait(auth);
    zsock_t *socks[2] = {router, pub};
    for (int i = 0; i < 2; i++) {
        zcert_apply(cert, socks[i]);
        zsock_set_curve_server(socks[i], 1);
        zsock_set_zap_domain(socks[i], "nexus");
    }
    zcert_destroy(&cert);
    *auth_out = auth;
    nx_log(NX_LOG_INFO, "nexusd: CURVE on; allowed clients from %s", conf->curve_clients);
    return NX_OK;
}

static int open_sockets(const nx_nexus_conf_t *conf, zsock_t **router_out, zsock_t **pub_out,
                        zactor_t **auth_out, nx_err_t *err)
{
    zsock_t *router = zsock_new(ZMQ_ROUTER);
    zsock_t *pub = zsock_new(ZMQ_PUB);
    int rc = NX_OK;
    if (!router || !pub) {
        rc = nx_err_set(err, NX_ENOMEM, "cannot create the ZeroMQ sockets");
        goto out_fail;
    }
    /* Frames over max_message_bytes are read and answered too_large, up to
     * max_message_hard_bytes; larger ones (nobody's mistake) make ZeroMQ close that connection
     * on their size prefix instead of buffering them (schemas/protocol.md: Message size). */
    int64_t hard_bytes = (int64_t)conf->max_message_hard_bytes;
    zmq_setsockopt(zsock_resolve(router), ZMQ_MAXMSGSIZE, &hard_bytes, sizeof hard_bytes);
    zsock_set_sndhwm(router, (int)conf->send_hwm); /* replies to one client queue up to here */
    /* ...and past it ZeroMQ says so (EAGAIN), as it does for a client that is gone
     * (EHOSTUNREACH), instead of dropping the reply: router_out.c holds or drops it. */
    zsock_set_router_mandatory(router, 1);
    zsock_set_linger(router, 200);
    if ((rc = setup_curve(conf, router, pub, auth_out, err)) != NX_OK)
        goto out_fail;
    if (zsock_bind(router, "%s", conf->listen) < 0) {
        rc = nx_err_set(err, NX_EIO, "%s: listen '%s': cannot bind: %s", conf->source_path,
                        conf->listen, zmq_strerror(zmq_errno()));
        goto out_fail;
    }
    if (conf->http_enabled && zsock_bind(router, "%s", HTTP_ROUTER_ENDPOINT) < 0) {
        rc = nx_err_set(err, NX_EIO, "cannot bind the HTTP front's endpoint %s: %s",
                        HTTP_ROUTER_ENDPOINT, zmq_strerror(zmq_errno()));
        goto out_fail;
    }
    if (zsock_bind(pub, "%s", conf->events) < 0) {
        rc = nx_err_set(err, NX_EIO, "%s: events '%s': cannot bind: %s", conf->source_path,
                        conf->events, zmq_strerror(zmq_errno()));
        goto out_fail;
    }
    *router_out = router;
    *pub_out = pub;
    return NX_OK;
out_fail:
    zsock_destroy(&router);
    zsock_destroy(&pub);
    zactor_destroy(auth_out);
    return rc;
}

/* SIGINT/SIGTERM. While starting (a large pool can take seconds to reserve) they end the
 * process at once: nothing is in flight yet and SQLite's WAL is crash-safe. Once serving they
 * make stop_fd (an eventfd the router polls) readable, whichever thread they land on. */
static volatile sig_atomic_t serving;
static int stop_efd = -1;

static void on_stop_signal(int sig)
{
    if (!serving)
        _exit(128 + sig);
    uint64_t one = 1;
    ssize_t w = write(stop_efd, &one, sizeof one);
    (void)w;
}

static int stop_signal_fd(void)
{
    stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_efd < 0)
        return -1;
    struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return stop_efd;
}

/* ------------------------------------------------------------------------------------------
 * main
 */
typedef struct daemon_state {
    nx_nexus_conf_t *conf;
    nx_store_t *store;
    nx_mailbox_t *mailbox;
    nx_exec_t *exec;
    zsock_t *router, *pub;
    zactor_t *auth;
    nx__storeth_t *storeth;
    nx__router_t *rt;
    nx_http_t *http;
    int stop_fd;
} daemon_state_t;

static int start(daemon_state_t *d, const args_t *args, nx_err_t *err)
{
    int rc;
    if ((rc = check_security(d->conf, err)) != NX_OK)
        return rc;
    if (!(d->store = open_store(d->conf, err)))
        return err->code ? err->code : NX_EIO;
    if ((rc = recover_unfinished(d->store, err)) != NX_OK ||
        (rc = record_agents(d->store, d->conf, err)) != NX_OK)
        return rc;
    if (!(d->mailbox = nx_mailbox_new()))
        return nx_err_set(err, NX_ENOMEM, "cannot create the router's mailbox");
    nx_exec_opts_t eo = {.conf = d->conf, .policy = args->policy,
                         .report = nx__report_to_mailbox, .report_user = d->mailbox};
    if (!(d->exec = nx_exec_new(&eo, err)))
        return err->code ? err->code : NX_EDEVICE;
    if ((rc = record_models(d->store, d->exec, err)) != NX_OK)
        return rc;
    if ((rc = open_sockets(d->conf, &d->router, &d->pub, &d->auth, err)) != NX_OK)
        return rc;
    if (!(d->storeth = nx__storeth_start(&d->store, d->mailbox, err)))
        return err->code;
    nx__router_opts_t ro = {.conf = d->conf, .exec = d->exec, .store = d->storeth,
                            .mailbox = d->mailbox, .router = d->router, .pub = d->pub,
                            .stop_fd = d->stop_fd};
    if (!(d->rt = nx__router_new(&ro, err)))
        return err->code;
    d->router = d->pub = NULL; /* the router owns them now */
    if (d->conf->http_enabled && !(d->http = nx_http_new(d->conf, HTTP_ROUTER_ENDPOINT, err)))
        return err->code ? err->code : NX_EIO;
    return NX_OK;
}

static void stop(daemon_state_t *d)
{
    if (d->rt) {
        nx__router_detach_exec(d->rt);
        nx_exec_destroy(&d->exec); /* queued and running tasks report shutting_down */
        nx__router_drain(d->rt, 5000); /* HTTP requests waiting get their answers too */
        nx_http_destroy(&d->http);      /* before the router's socket goes */
        nx__router_destroy(&d->rt);
    }
    nx_http_destroy(&d->http);
    nx_exec_destroy(&d->exec);
    zsock_destroy(&d->router);
    zsock_destroy(&d->pub);
    zactor_destroy(&d->auth);
    nx__storeth_stop(&d->storeth);
    nx_store_close(&d->store);
    nx_mailbox_destroy(&d->mailbox, nx__mailbox_item_free);
    nx_nexus_conf_free(&d->conf);
    if (d->stop_fd >= 0)
        close(d->stop_fd);
}

int main(int argc, char **argv)
{
    args_t args;
    if (parse_args(argc, argv, &args) != 0) {
        usage(stderr);
        return 2;
    }
    daemon_state_t d = {.stop_fd = -1};
    nx_err_t err = {0};
    if (nx_nexus_conf_load(args.config, &d.conf, &err) != NX_OK) {
        fprintf(stderr, "nexusd: %s\n", err.msg);
        return 1;
    }
    if (args.check) {
        char summary[256];
        int rc = check_security(d.conf, &err);
        if (rc == NX_OK)
            rc = nx__daemon_check(d.conf, summary, sizeof summary, &err);
        if (rc == NX_OK)
            printf("%s: OK (%s)\n", args.config, summary);
        else
            fprintf(stderr, "nexusd: %s\n", err.msg);
        nx_nexus_conf_free(&d.conf);
        return rc == NX_OK ? 0 : 1;
    }
    zsys_handler_set(NULL); /* signals are ours (stop_signal_fd), not czmq's */
    d.stop_fd = stop_signal_fd();
    if (d.stop_fd < 0) {
        fprintf(stderr, "nexusd: eventfd failed: %s\n", strerror(errno));
        stop(&d);
        return 1;
    }
    if (start(&d, &args, &err) != NX_OK) {
        fprintf(stderr, "nexusd: %s\n", err.msg[0] ? err.msg : "start-up failed");
        stop(&d);
        zsys_shutdown();
        return 1;
    }
    printf("nexusd %s: serving %zu agents on %s (events on %s); stop with Ctrl-C\n",
           NX_DAEMON_VERSION, d.conf->agent_count, d.conf->listen, d.conf->events);
    if (d.http)
        printf("nexusd: OpenAI-compatible HTTP on http://%s%s%s:%u/v1\n",
               strchr(d.conf->http_host, ':') ? "[" : "", d.conf->http_host,
               strchr(d.conf->http_host, ':') ? "]" : "", nx_http_port(d.http));
    fflush(stdout);
    serving = 1;
    nx__router_run(d.rt);
    nx_http_quiesce(d.http); /* new HTTP requests: 503 from now on */
    stop(&d);
    zsys_shutdown();
    nx_log(NX_LOG_INFO, "nexusd: stopped");
    return 0;
}
