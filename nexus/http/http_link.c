/* http_link.c — one HTTP request's conversation with the router: a DEALER connected to the
 * router's inproc:// endpoint, opened per request. inproc bypasses ZeroMQ's security
 * mechanisms (no CURVE handshake, no ZAP), so this works the same with CURVE on; the router
 * knows the link by its routing identity, which is what makes cancel ownership hold: only this
 * request's DEALER may cancel the task it sent.
 *
 * Waiting watches three things: the DEALER, the HTTP client's socket (readable with nothing
 * to read means it hung up: the task is then cancelled by the caller) and the daemon's stop
 * flag (checked every 100 ms). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <zmq.h>

#include "http_int.h"
#include "nx_err.h"
#include "proto_int.h"

int nx__link_open(nx__link_t *link, nx_http_t *http, int client_fd)
{
    memset(link, 0, sizeof *link);
    link->http = http;
    link->client_fd = client_fd;
    msgpack_unpacked_init(&link->reply);
    link->dealer = zmq_socket(http->zmq_ctx, ZMQ_DEALER);
    if (!link->dealer)
        return NX_EIO;
    int zero = 0;
    zmq_setsockopt(link->dealer, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(link->dealer, http->endpoint) != 0) {
        zmq_close(link->dealer);
        link->dealer = NULL;
        return NX_EIO;
    }
    return NX_OK;
}

void nx__link_close(nx__link_t *link)
{
    msgpack_unpacked_destroy(&link->reply);
    free(link->frame);
    link->frame = NULL;
    if (link->dealer)
        zmq_close(link->dealer);
    link->dealer = NULL;
}

int nx__link_send(nx__link_t *link, nx_writer_t *w)
{
    size_t len;
    const void *data = nx_writer_data(w, &len);
    if (!data)
        return NX_ENOMEM;
    return zmq_send(link->dealer, data, len, ZMQ_DONTWAIT) == (int)len ? NX_OK : NX_EIO;
}

/* Whether the client's socket, reported readable, was closed (or reset) by the client. Bytes
 * waiting (a pipelined request) mean it is still there; it is not watched any more then. */
static bool client_gone(nx__link_t *link)
{
    char byte;
    ssize_t n = recv(link->client_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
        link->client_fd = -1;
        return false;
    }
    return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static nx__wait_t take_reply(nx__link_t *link)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, link->dealer, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return errno == EAGAIN ? NX__WAIT_TIMEOUT : NX__WAIT_ERROR;
    }
    size_t len = zmq_msg_size(&msg);
    free(link->frame);
    link->frame = malloc(len ? len : 1);
    if (!link->frame) {
        zmq_msg_close(&msg);
        return NX__WAIT_ERROR;
    }
    memcpy(link->frame, zmq_msg_data(&msg), len);
    zmq_msg_close(&msg);
    msgpack_unpacked_destroy(&link->reply);
    msgpack_unpacked_init(&link->reply);
    const char *code = NULL;
    nx_err_t err = {0};
    return nx__proto_unpack_map(link->frame, len, 0, &link->reply, &code, &err) == NX_OK
               ? NX__WAIT_OK
               : NX__WAIT_ERROR;
}

nx__wait_t nx__link_wait(nx__link_t *link, int timeout_ms)
{
    uint64_t deadline = timeout_ms >= 0 ? nx_now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    for (;;) {
        nx__wait_t got = take_reply(link);
        if (got != NX__WAIT_TIMEOUT)
            return got;
        if (atomic_load(&link->http->stopping))
            return NX__WAIT_STOPPING;
        int slice = 100;
        if (timeout_ms >= 0) {
            uint64_t now = nx_now_ns();
            if (now >= deadline)
                return NX__WAIT_TIMEOUT;
            uint64_t left_ms = (deadline - now) / 1000000ull + 1;
            if (left_ms < (uint64_t)slice)
                slice = (int)left_ms;
        }
        zmq_pollitem_t items[2] = {
            {.socket = link->dealer, .events = ZMQ_POLLIN},
            {.fd = link->client_fd, .events = ZMQ_POLLIN},
        };
        int n = zmq_poll(items, link->client_fd >= 0 ? 2 : 1, slice);
        if (n < 0 && zmq_errno() != EINTR)
            return NX__WAIT_ERROR;
        if (n > 0 && link->client_fd >= 0 && (items[1].revents & ZMQ_POLLIN) && client_gone(link))
            return NX__WAIT_GONE;
    }
}

const msgpack_object *nx__mp_get(const msgpack_object *map, const char *key)
{
    return map ? nx__proto_get(map, key) : NULL;
}

const msgpack_object *nx__link_get(const nx__link_t *link, const char *key)
{
    return nx__proto_get(&link->reply.data, key);
}

bool nx__link_op_is(const nx__link_t *link, const char *op)
{
    const msgpack_object *o = nx__link_get(link, "op");
    return o && nx__proto_str_eq(o, op);
}

char *nx__mp_strdup(const msgpack_object *o)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return NULL;
    return strndup(o->via.str.ptr, o->via.str.size);
}

int64_t nx__mp_int(const msgpack_object *o)
{
    if (!o)
        return 0;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return o->via.u64 > INT64_MAX ? INT64_MAX : (int64_t)o->via.u64;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return o->via.i64;
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        return (int64_t)o->via.f64;
    return 0;
}

double nx__mp_real(const msgpack_object *o)
{
    if (!o)
        return 0;
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        return o->via.f64;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (double)o->via.u64;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return (double)o->via.i64;
    return 0;
}

nx__wait_t nx__link_call(nx__link_t *link, const char *op, int timeout_ms)
{
    nx_writer_t *w = nx_writer_new();
    if (!w)
        return NX__WAIT_ERROR;
    nx_writer_reply(w, op, NULL, 0);
    int rc = nx__link_send(link, w);
    nx_writer_destroy(&w);
    return rc == NX_OK ? nx__link_wait(link, timeout_ms) : NX__WAIT_ERROR;
}

void nx__link_cancel(nx__link_t *link, int64_t task)
{
    nx_writer_t *w = nx_writer_new();
    if (!w)
        return;
    nx_writer_reply(w, "cancel", NULL, 0);
    nx_writer_int(w, "task", task);
    int rc = nx__link_send(link, w);
    nx_writer_destroy(&w);
    link->client_fd = -1; /* it is gone: wait for the router only */
    uint64_t deadline = nx_now_ns() + 1000000000ull;
    while (rc == NX_OK && nx_now_ns() < deadline) {
        nx__wait_t got = nx__link_wait(link, 100);
        if (got == NX__WAIT_STOPPING || got == NX__WAIT_ERROR)
            return;
        if (got == NX__WAIT_OK && (nx__link_op_is(link, "canceled") ||
            (nx__link_op_is(link, "error") && !nx__link_get(link, "task"))))
            return; /* the answer to the cancel: it was read */
    }
}
