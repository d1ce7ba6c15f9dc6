/* client.h — a small client of nexusd (schemas/protocol.md): one DEALER socket connected to
 * the daemon's endpoint (CURVE when keys are given), requests built with the protocol writer
 * and stamped with a fresh integer id, replies read back as msgpack maps and matched to the
 * request by that id. Every wait is bounded by a timeout, and the socket never lingers or
 * queues for a peer that is not there (ZMQ_LINGER 0, ZMQ_IMMEDIATE), so a daemon that is not
 * running is an answer within the timeout, never a hang. Used by nexusctl; one thread.
 */
#ifndef NX_CLIENT_H
#define NX_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <msgpack.h>

#include "nx_err.h"
#include "proto.h"

#define NX_CLIENT_DEFAULT_ENDPOINT "tcp://127.0.0.1:5555"

typedef struct nx_client_opts {
    const char *endpoint;    /* e.g. tcp://127.0.0.1:5555 */
    const char *client_cert; /* the client's certificate as keygen wrote it (NAME.key or
                                NAME.key_secret; the secret part is needed), or NULL */
    const char *server_cert; /* the server's public certificate, or NULL; CURVE needs both */
} nx_client_opts_t;

typedef struct nx_client nx_client_t;

/* Create the socket and connect it (ZeroMQ connects in the background: success here does not
 * mean a daemon is there; nx_client_ping says that). NX_EINVAL naming the endpoint when it
 * is malformed, or the file when a certificate cannot be read or lacks its secret key, or
 * when only one of the two certificates is given. Caller owns the result. */
nx_client_t *nx_client_new(const nx_client_opts_t *opts, nx_err_t *err);
void nx_client_destroy(nx_client_t **self_p);

const char *nx_client_endpoint(const nx_client_t *self);
bool nx_client_uses_curve(const nx_client_t *self);

/* Start a request {"op": op, "id": <fresh id>} and return the client's writer for the caller
 * to add fields to (borrowed; valid until the next begin). */
nx_writer_t *nx_client_begin(nx_client_t *self, const char *op);

/* Send the request begun last. NX_EIO when it could not be handed to a connected daemon
 * within timeout_ms; NX_ECANCELED when interrupted (SIGINT). */
int nx_client_send(nx_client_t *self, int timeout_ms, nx_err_t *err);

/* One reply: the unpacked map (valid until nx_client_reply_clear). */
typedef struct nx_client_reply {
    void *frame_msg;           /* the received zmsg_t: msgpack-c's strings point into it */
    msgpack_unpacked unpacked; /* owns the zone behind map */
    const msgpack_object *map; /* a map with string keys */
    char op[32];               /* its "op" ("" when missing or not a string) */
} nx_client_reply_t;

/* Wait up to timeout_ms (< 0: no limit) for the next reply to the last request sent; replies
 * to earlier requests are dropped. NX_EIO on timeout, NX_ECANCELED when interrupted,
 * NX_EFORMAT naming the problem when the reply is not one msgpack map. *reply starts zeroed
 * ({0}) or cleared; the caller clears it (nx_client_reply_clear) in every case. */
int nx_client_recv(nx_client_t *self, int timeout_ms, nx_client_reply_t *reply, nx_err_t *err);
void nx_client_reply_clear(nx_client_reply_t *reply);

/* Send a ping and wait for its pong, both within timeout_ms; *version_out (cap bytes) gets
 * the daemon's version. NX_EIO when nothing answered in time. */
int nx_client_ping(nx_client_t *self, int timeout_ms, char *version_out, size_t cap,
                   nx_err_t *err);

/* Reading replies. field: the value under string key `key` of map o, or NULL (also when o is
 * NULL or not a map). text: a string value copied into buf (truncated to cap), "" when o is
 * not a string. number: an integer or float value as a double; false when o is neither. */
const msgpack_object *nx_client_field(const msgpack_object *o, const char *key);
const char *nx_client_text(const msgpack_object *o, char *buf, size_t cap);
bool nx_client_number(const msgpack_object *o, double *out);

/* The value as JSON: maps (non-string keys printed as text), arrays, strings, numbers, bools,
 * nil as null, bin and ext as hex strings, non-finite floats as null. Caller owns the result;
 * NULL only when out of memory. */
json_t *nx_client_to_json(const msgpack_object *o);

#endif
