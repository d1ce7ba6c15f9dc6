/* client.c — nexusd's client (client.h): a DEALER socket, integer request ids, bounded waits.
 * Replies are checked like requests (one map with string keys, proto_frame.c) before anyone
 * reads them: the daemon is another process, so its frames are outside input too.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "client.h"
#include "proto_int.h"

#define REPLY_MAX_BYTES (64u << 20) /* history and task listings can be long */
#define NO_SECRET "0000000000000000000000000000000000000000"

struct nx_client {
    zsock_t *sock;
    char *endpoint;
    bool curve;
    nx_writer_t *writer;
    uint64_t next_id; /* ids sent so far; the last request's id is next_id */
};

/* Load the client's certificate (needs the secret key) and the server's public one. */
static int apply_curve(nx_client_t *self, const nx_client_opts_t *opts, nx_err_t *err)
{
    if (!opts->client_cert && !opts->server_cert)
        return NX_OK;
    if (!opts->client_cert || !opts->server_cert)
        return nx_err_set(err, NX_EINVAL, "CURVE needs both the client's certificate (--key) "
                          "and the server's public certificate (--server-key)");
    int rc = NX_OK;
    zcert_t *mine = zcert_load(opts->client_cert);
    zcert_t *server = zcert_load(opts->server_cert);
    if (!mine) {
        rc = nx_err_set(err, NX_EINVAL, "cannot read the client certificate '%s' (write one "
                        "with `nexusctl keygen DIR`)", opts->client_cert);
        goto out;
    }
    if (strcmp(zcert_secret_txt(mine), NO_SECRET) == 0) {
        rc = nx_err_set(err, NX_EINVAL, "the client certificate '%s' holds no secret key "
                        "(pass NAME.key with NAME.key_secret beside it, or NAME.key_secret)",
                        opts->client_cert);
        goto out;
    }
    if (!server) {
        rc = nx_err_set(err, NX_EINVAL, "cannot read the server's public certificate '%s'",
                        opts->server_cert);
        goto out;
    }
    zcert_apply(mine, self->sock);
    zsock_set_curve_serverkey(self->sock, zcert_public_txt(server));
    self->curve = true;
out:
    zcert_destroy(&mine);
    zcert_destroy(&server);
    return rc;
}

nx_client_t *nx_client_new(const nx_client_opts_t *opts, nx_err_t *err)
{
    const char *endpoint = opts->endpoint ? opts->endpoint : NX_CLIENT_DEFAULT_ENDPOINT;
    nx_client_t *self = calloc(1, sizeof *self);
    if (!self)
        goto out_nomem;
    self->endpoint = strdup(endpoint);
    self->writer = nx_writer_new();
    self->sock = zsock_new(ZMQ_DEALER);
    if (!self->endpoint || !self->writer)
        goto out_nomem;
    if (!self->sock) {
        nx_err_set(err, NX_EIO, "cannot create a ZeroMQ socket: %s", zmq_strerror(errno));
        goto out_free;
    }
    zsock_set_linger(self->sock, 0);    /* never wait at exit for a daemon that is gone */
    zsock_set_immediate(self->sock, 1); /* queue only to a completed connection */
    if (apply_curve(self, opts, err))
        goto out_free;
    if (zsock_connect(self->sock, "%s", endpoint) != 0) {
        nx_err_set(err, NX_EINVAL, "cannot connect to '%s': %s (an endpoint looks like "
                   "tcp://HOST:PORT or ipc:///path)", endpoint, zmq_strerror(errno));
        goto out_free;
    }
    return self;
out_nomem:
    nx_err_set(err, NX_ENOMEM, "out of memory creating the client");
out_free:
    nx_client_destroy(&self);
    return NULL;
}

void nx_client_destroy(nx_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_client_t *self = *self_p;
    zsock_destroy(&self->sock);
    nx_writer_destroy(&self->writer);
    free(self->endpoint);
    free(self);
    *self_p = NULL;
}

const char *nx_client_endpoint(const nx_client_t *self) { return self->endpoint; }
bool nx_client_uses_curve(const nx_client_t *self) { return self->curve; }

nx_writer_t *nx_client_begin(nx_client_t *self, const char *op)
{
    unsigned char id[9];
    size_t id_len;
    uint64_t n = ++self->next_id;
    if (n < 128) { /* msgpack positive fixint, else uint64: what the daemon will echo */
        id[0] = (unsigned char)n;
        id_len = 1;
    } else {
        id[0] = 0xcf;
        for (int i = 0; i < 8; i++)
            id[1 + i] = (unsigned char)(n >> (56 - 8 * i));
        id_len = 9;
    }
    nx_writer_reply(self->writer, op, id, id_len);
    return self->writer;
}

/* Wait until the socket is readable (ZMQ_POLLIN) or writable; 1 ready, 0 timeout, <0 rc. */
static int wait_for(nx_client_t *self, short events, int timeout_ms, nx_err_t *err)
{
    zmq_pollitem_t item = {.socket = zsock_resolve(self->sock), .events = events};
    int n = zmq_poll(&item, 1, timeout_ms);
    if (n < 0 && (errno == EINTR || zsys_interrupted))
        return nx_err_set(err, NX_ECANCELED, "interrupted");
    if (n < 0)
        return nx_err_set(err, NX_EIO, "waiting on %s: %s", self->endpoint,
                          zmq_strerror(errno));
    return n > 0 ? 1 : 0;
}

int nx_client_send(nx_client_t *self, int timeout_ms, nx_err_t *err)
{
    size_t len;
    const void *data = nx_writer_data(self->writer, &len);
    if (!data)
        return nx_err_set(err, NX_ENOMEM, "out of memory building the request");
    /* with ZMQ_IMMEDIATE the socket is writable only once a daemon is connected */
    int ready = wait_for(self, ZMQ_POLLOUT, timeout_ms, err);
    if (ready < 0)
        return ready;
    if (ready == 0)
        return nx_err_set(err, NX_EIO, "no connection to %s within %d ms", self->endpoint,
                          timeout_ms);
    if (zmq_send(zsock_resolve(self->sock), data, len, ZMQ_DONTWAIT) != (int)len)
        return nx_err_set(err, NX_EIO, "sending to %s: %s", self->endpoint,
                          zmq_strerror(errno));
    return NX_OK;
}

void nx_client_reply_clear(nx_client_reply_t *reply)
{
    if (!reply)
        return;
    msgpack_unpacked_destroy(&reply->unpacked);
    zmsg_t *msg = reply->frame_msg;
    zmsg_destroy(&msg);
    memset(reply, 0, sizeof *reply);
    msgpack_unpacked_init(&reply->unpacked);
}

/* Receive one message; its last frame is the reply (a REQ-style empty delimiter before it is
 * tolerated). Unpack and check it into *reply, which keeps the message: msgpack-c's strings
 * and bins point into the frame's bytes rather than copying them. */
static int read_one(nx_client_t *self, nx_client_reply_t *reply, nx_err_t *err)
{
    nx_client_reply_clear(reply);
    zmsg_t *msg = zmsg_recv_nowait(self->sock);
    if (!msg)
        return nx_err_set(err, NX_EIO, "receiving from %s failed", self->endpoint);
    reply->frame_msg = msg;
    zframe_t *frame = zmsg_last(msg);
    if (!frame)
        return nx_err_set(err, NX_EFORMAT, "an empty message from %s", self->endpoint);
    const char *code = NULL;
    int rc = nx__proto_unpack_map(zframe_data(frame), zframe_size(frame), REPLY_MAX_BYTES,
                                  &reply->unpacked, &code, err);
    if (rc)
        return nx_err_prefix(err, "a reply from %s: ", self->endpoint);
    reply->map = &reply->unpacked.data;
    nx_client_text(nx_client_field(reply->map, "op"), reply->op, sizeof reply->op);
    return NX_OK;
}

static bool is_current(const nx_client_t *self, const msgpack_object *map)
{
    const msgpack_object *id = nx_client_field(map, "id");
    return id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER && id->via.u64 == self->next_id;
}

int nx_client_recv(nx_client_t *self, int timeout_ms, nx_client_reply_t *reply, nx_err_t *err)
{
    uint64_t deadline_ns = nx_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000u;
    for (;;) {
        int wait_ms = -1;
        if (timeout_ms >= 0) {
            uint64_t now = nx_now_ns();
            wait_ms = now >= deadline_ns ? 0 : (int)((deadline_ns - now + 999999) / 1000000);
        }
        int ready = wait_for(self, ZMQ_POLLIN, wait_ms, err);
        if (ready < 0)
            return ready;
        if (ready == 0)
            return nx_err_set(err, NX_EIO, "no reply from %s within %d ms", self->endpoint,
                              timeout_ms);
        int rc = read_one(self, reply, err);
        if (rc)
            return rc;
        if (is_current(self, reply->map))
            return NX_OK;
        /* a late reply to an earlier request (a ping that timed out, say): skip it */
    }
}

int nx_client_ping(nx_client_t *self, int timeout_ms, char *version_out, size_t cap,
                   nx_err_t *err)
{
    uint64_t start = nx_now_ns();
    nx_client_begin(self, "ping");
    int rc = nx_client_send(self, timeout_ms, err);
    if (rc)
        return rc;
    int spent_ms = (int)((nx_now_ns() - start) / 1000000u);
    nx_client_reply_t reply = {0};
    msgpack_unpacked_init(&reply.unpacked);
    rc = nx_client_recv(self, spent_ms < timeout_ms ? timeout_ms - spent_ms : 0, &reply, err);
    if (!rc && strcmp(reply.op, "pong") != 0)
        rc = nx_err_set(err, NX_EFORMAT, "%s answered a ping with '%s', not 'pong'",
                        self->endpoint, reply.op);
    if (!rc && version_out)
        nx_client_text(nx_client_field(reply.map, "version"), version_out, cap);
    nx_client_reply_clear(&reply);
    return rc;
}

const msgpack_object *nx_client_field(const msgpack_object *o, const char *key)
{
    return nx__proto_get(o, key);
}

const char *nx_client_text(const msgpack_object *o, char *buf, size_t cap)
{
    if (cap == 0)
        return buf;
    buf[0] = 0;
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return buf;
    size_t n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
    memcpy(buf, o->via.str.ptr, n);
    buf[n] = 0;
    return buf;
}

bool nx_client_number(const msgpack_object *o, double *out)
{
    if (!o)
        return false;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return true;
    case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return true;
    default: return false;
    }
}

static json_t *hex_json(const char *bytes, size_t len)
{
    char *text = malloc(2 * len + 1);
    if (!text)
        return NULL;
    for (size_t i = 0; i < len; i++)
        snprintf(text + 2 * i, 3, "%02x", (unsigned char)bytes[i]);
    json_t *j = json_stringn(text, 2 * len);
    free(text);
    return j;
}

static json_t *map_json(const msgpack_object *o)
{
    json_t *obj = json_object();
    for (uint32_t i = 0; obj && i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        char key[256];
        if (kv->key.type == MSGPACK_OBJECT_STR)
            snprintf(key, sizeof key, "%.*s", (int)(kv->key.via.str.size < 255 ?
                     kv->key.via.str.size : 255), kv->key.via.str.ptr);
        else
            msgpack_object_print_buffer(key, sizeof key, kv->key);
        json_t *v = nx_client_to_json(&kv->val);
        if (!v || json_object_set_new(obj, key, v) != 0) /* set_new takes v even on failure */
            json_decref(obj), obj = NULL;
    }
    return obj;
}

json_t *nx_client_to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o->via.u64 <= INT64_MAX ? json_integer((json_int_t)o->via.u64)
                                       : json_real((double)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64:
        return isfinite(o->via.f64) ? json_real(o->via.f64) : json_null();
    case MSGPACK_OBJECT_STR: {
        json_t *s = json_stringn(o->via.str.ptr, o->via.str.size);
        return s ? s : hex_json(o->via.str.ptr, o->via.str.size); /* not UTF-8 */
    }
    case MSGPACK_OBJECT_BIN: return hex_json(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_EXT: return hex_json(o->via.ext.ptr, o->via.ext.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *arr = json_array();
        for (uint32_t i = 0; arr && i < o->via.array.size; i++) {
            json_t *v = nx_client_to_json(&o->via.array.ptr[i]);
            if (!v || json_array_append_new(arr, v) != 0)
                json_decref(arr), arr = NULL;
        }
        return arr;
    }
    case MSGPACK_OBJECT_MAP: return map_json(o);
    }
    return json_null();
}
