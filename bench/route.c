/* route.c — what routing through nexusd costs: tasks per second and latency (p50, p99) of a
 * trivial task (an agent with max_tokens 1 on a tiny model) sent to a running nexusd, beside
 * the same measurement for a raw ZeroMQ DEALER -> ROUTER echo (in this process, on loopback
 * TCP) in the same run. The difference is the latency nexusd adds: parse, two SQLite commits
 * (accepted, result), one scheduler step of a tiny model, the replies.
 *
 *   build/bench/route --endpoint tcp://127.0.0.1:PORT --agent NAME [--count N] [--window W]
 *   build/bench/route --endpoint tcp://127.0.0.1:PORT --ping [--count N] [--window W]
 *
 * --ping sends `ping` instead of tasks: the router's own path (receive, parse, reply) with no
 * store and no executor, so a change there shows without the fsyncs' noise.
 *
 * bench/run_daemon.sh starts the daemon and runs this.
 */
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nx_err.h"
#include "proto.h"

typedef struct opts {
    const char *endpoint, *agent;
    int count, window;
    bool ping; /* ping requests instead of tasks */
} opts_t;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

/* The request frame for request number `seq` (its id); a task or a raw echo payload. */
static void build(nx_writer_t *w, const opts_t *o, int seq)
{
    unsigned char id[9] = {0xd3}; /* msgpack int64 */
    for (int i = 0; i < 8; i++)
        id[1 + i] = (unsigned char)((uint64_t)seq >> (56 - 8 * i));
    nx_writer_reset(w);
    nx_writer_reply(w, o->ping ? "ping" : "task", id, sizeof id);
    if (o->ping)
        return;
    nx_writer_str(w, "agent", o->agent);
    nx_writer_str(w, "input", "hi");
}

/* Read one reply's op and id (the int64 we sent) without a full parse. */
static bool reply_of(zframe_t *f, char *op, size_t cap, int64_t *id)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    bool ok = msgpack_unpack_next(&u, (const char *)zframe_data(f), zframe_size(f), NULL) ==
                  MSGPACK_UNPACK_SUCCESS &&
              u.data.type == MSGPACK_OBJECT_MAP;
    op[0] = '\0';
    *id = -1;
    for (uint32_t i = 0; ok && i < u.data.via.map.size; i++) {
        msgpack_object_kv *kv = &u.data.via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            continue;
        if (kv->key.via.str.size == 2 && memcmp(kv->key.via.str.ptr, "op", 2) == 0 &&
            kv->val.type == MSGPACK_OBJECT_STR)
            snprintf(op, cap, "%.*s", (int)kv->val.via.str.size, kv->val.via.str.ptr);
        if (kv->key.via.str.size == 2 && memcmp(kv->key.via.str.ptr, "id", 2) == 0 &&
            (kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
             kv->val.type == MSGPACK_OBJECT_NEGATIVE_INTEGER))
            *id = kv->val.via.i64;
    }
    msgpack_unpacked_destroy(&u);
    return ok;
}

/* Send `count` requests with at most `window` in flight; lat[i] = send -> final reply (ms).
 * final: a reply whose op is not "accepted"/"token" (raw echo: the echoed frame itself).
 * Returns the wall seconds, or -1 on an error reply or timeout. */
static double run(zsock_t *dealer, const opts_t *o, int count, int window, double *lat,
                  bool raw)
{
    nx_writer_t *w = nx_writer_new();
    uint64_t *sent = calloc((size_t)count, sizeof *sent);
    int next = 0, done = 0;
    uint64_t t0 = nx_now_ns();
    double wall = -1;
    zsock_set_rcvtimeo(dealer, 30000);
    while (done < count) {
        while (next < count && next - done < window) {
            build(w, o, next);
            size_t len;
            const void *data = nx_writer_data(w, &len);
            sent[next] = nx_now_ns();
            zframe_t *f = zframe_new(data, len);
            zframe_send(&f, dealer, 0);
            next++;
        }
        zframe_t *f = zframe_recv(dealer);
        if (!f) {
            fprintf(stderr, "route: no reply in 30 s (%d of %d done)\n", done, count);
            goto out;
        }
        char op[32];
        int64_t id;
        bool ok = reply_of(f, op, sizeof op, &id);
        zframe_destroy(&f);
        if (!ok || id < 0 || id >= count) {
            fprintf(stderr, "route: an unexpected reply\n");
            goto out;
        }
        if (!raw && strcmp(op, "error") == 0) {
            fprintf(stderr, "route: task %lld answered error\n", (long long)id);
            goto out;
        }
        if (!raw && strcmp(op, "result") != 0 && strcmp(op, "pong") != 0)
            continue; /* accepted */
        lat[done++] = (double)(nx_now_ns() - sent[id]) / 1e6;
    }
    wall = (double)(nx_now_ns() - t0) / 1e9;
out:
    free(sent);
    nx_writer_destroy(&w);
    return wall;
}

/* The baseline: a ROUTER that echoes every frame back, on its own thread. */
static void echo_actor(zsock_t *pipe, void *arg)
{
    zsock_t *router = zsock_new_router("tcp://127.0.0.1:*");
    zsock_signal(pipe, 0);
    zstr_sendf(pipe, "%s", zsock_endpoint(router));
    zpoller_t *poller = zpoller_new(pipe, router, NULL);
    while (true) {
        void *which = zpoller_wait(poller, -1);
        if (which != router)
            break; /* $TERM or interrupted */
        zmsg_t *msg = zmsg_recv(router);
        if (msg)
            zmsg_send(&msg, router);
    }
    zpoller_destroy(&poller);
    zsock_destroy(&router);
}

static void report(const char *name, double *lat, int n, double wall)
{
    printf("%-8s %8.0f tasks/s  p50 %8.3f ms  p99 %8.3f ms  (%d requests)\n", name, n / wall,
           pct(lat, n, 0.50), pct(lat, n, 0.99), n);
}

static int parse(int argc, char **argv, opts_t *o)
{
    *o = (opts_t){.count = 2000, .window = 32};
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (strcmp(flag, "--ping") == 0) {
            o->ping = true;
            continue;
        }
        if (++i == argc)
            return -1; /* every other option has a value */
        if (strcmp(flag, "--endpoint") == 0)
            o->endpoint = argv[i];
        else if (strcmp(flag, "--agent") == 0)
            o->agent = argv[i];
        else if (strcmp(flag, "--count") == 0)
            o->count = atoi(argv[i]);
        else if (strcmp(flag, "--window") == 0)
            o->window = atoi(argv[i]);
        else
            return -1;
    }
    return o->endpoint && (o->agent || o->ping) && o->count > 0 && o->window > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    opts_t o;
    if (parse(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: route --endpoint E (--agent NAME | --ping) [--count N] "
                "[--window W]\n");
        return 2;
    }
    zsys_handler_set(NULL);
    double *lat = calloc((size_t)o.count, sizeof *lat);
    zactor_t *echo = zactor_new(echo_actor, NULL);
    char *echo_ep = zstr_recv(echo);
    zsock_t *raw = zsock_new_dealer(echo_ep);
    zsock_t *nexus = zsock_new_dealer(o.endpoint);
    int rc = 1;
    printf("route: %d requests each; one at a time (latency), then %d in flight (throughput)\n",
           o.count, o.window);
    /* latency: one in flight */
    double lat_raw50, lat_nx50, lat_raw99, lat_nx99;
    double wall = run(raw, &o, o.count, 1, lat, true);
    if (wall < 0)
        goto out;
    report("raw zmq", lat, o.count, wall);
    lat_raw50 = pct(lat, o.count, 0.5), lat_raw99 = pct(lat, o.count, 0.99);
    if ((wall = run(nexus, &o, o.count, 1, lat, false)) < 0)
        goto out;
    report("nexusd", lat, o.count, wall);
    lat_nx50 = pct(lat, o.count, 0.5), lat_nx99 = pct(lat, o.count, 0.99);
    printf("added latency: p50 %.3f ms, p99 %.3f ms (nexusd / raw p50: %.1fx)\n",
           lat_nx50 - lat_raw50, lat_nx99 - lat_raw99, lat_nx50 / lat_raw50);
    /* throughput: a window in flight */
    if ((wall = run(raw, &o, o.count, o.window, lat, true)) < 0)
        goto out;
    double raw_tps = o.count / wall;
    report("raw zmq", lat, o.count, wall);
    if ((wall = run(nexus, &o, o.count, o.window, lat, false)) < 0)
        goto out;
    report("nexusd", lat, o.count, wall);
    printf("throughput: nexusd %.0f tasks/s = %.3fx raw ZeroMQ's %.0f round trips/s\n",
           o.count / wall, (o.count / wall) / raw_tps, raw_tps);
    rc = 0;
out:
    zsock_destroy(&raw);
    zsock_destroy(&nexus);
    zstr_free(&echo_ep);
    zactor_destroy(&echo);
    free(lat);
    return rc;
}
