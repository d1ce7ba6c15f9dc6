/* http_int.h — the HTTP front's internals, shared by http_server.c (libmicrohttpd, routing,
 * limits, authentication), http_link.c (the DEALER to the router), http_openai.c (OpenAI
 * requests and replies, server-sent events) and http_metrics.c (Prometheus text). */
#ifndef NX_HTTP_INT_H
#define NX_HTTP_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <microhttpd.h>
#include <msgpack.h>

#include "conf.h"
#include "http.h"
#include "http_translate.h"
#include "proto.h"

#define NX__HTTP_ROUTES 6       /* no route (404), /health, /metrics, /v1/models, chat, completions */
#define NX__HTTP_STATUSES 13    /* the statuses the front answers with, the last "other" */

struct nx_http {
    const nx_nexus_conf_t *conf;
    char *endpoint;            /* the router's inproc:// endpoint */
    void *zmq_ctx;             /* czmq's context (inproc needs the router's) */
    struct MHD_Daemon *mhd;
    uint16_t port;
    atomic_bool refusing;      /* quiesced: new requests get 503 */
    atomic_bool stopping;      /* destroying: waiting requests give up with 503 */
    atomic_int active;         /* requests begun and not yet completed (answer sent) */
    int64_t started_s;         /* time() at start: the "created" of /v1/models entries */
    atomic_uint_fast64_t requests[NX__HTTP_ROUTES][NX__HTTP_STATUSES]; /* answered, by route
                                                                          and status */
};

/* ---- http_link.c: one request's conversation with the router ------------------------------ */
typedef struct nx__link {
    nx_http_t *http;
    void *dealer;              /* a DEALER connected to http->endpoint */
    int client_fd;             /* the HTTP client's socket, watched for hang-ups; -1: not */
    msgpack_unpacked reply;    /* the last reply received (valid until the next receive) */
    void *frame;               /* its bytes (msgpack-c points into them) */
} nx__link_t;

typedef enum nx__wait {
    NX__WAIT_OK = 0,      /* link->reply holds a reply */
    NX__WAIT_GONE,        /* the HTTP client hung up */
    NX__WAIT_STOPPING,    /* the daemon is stopping */
    NX__WAIT_TIMEOUT,     /* nothing within the time given */
    NX__WAIT_ERROR,       /* the socket failed, or the reply is not a msgpack map */
} nx__wait_t;

int nx__link_open(nx__link_t *link, nx_http_t *http, int client_fd);
void nx__link_close(nx__link_t *link);
/* Send the frame w holds. NX_OK or NX_EIO. */
int nx__link_send(nx__link_t *link, nx_writer_t *w);
/* Wait for the next reply (timeout_ms < 0: until one comes, the client leaves or the daemon
 * stops). */
nx__wait_t nx__link_wait(nx__link_t *link, int timeout_ms);
/* The reply's "op" (NULL if none), and typed fields ("" / 0 when absent or of another type). */
bool nx__link_op_is(const nx__link_t *link, const char *op);
const msgpack_object *nx__link_get(const nx__link_t *link, const char *key);
char *nx__mp_strdup(const msgpack_object *o); /* a string's copy, or NULL (caller frees) */
int64_t nx__mp_int(const msgpack_object *o);  /* an integer, or 0 */
double nx__mp_real(const msgpack_object *o); /* a number, or 0 */
const msgpack_object *nx__mp_get(const msgpack_object *map, const char *key);
/* Send {"op": op} and wait (timeout_ms) for its reply; NX__WAIT_*. */
nx__wait_t nx__link_call(nx__link_t *link, const char *op, int timeout_ms);
/* Cancel task `task` (ours) and wait up to 1 s for the router's answer, so the cancel is read
 * before the DEALER goes away. */
void nx__link_cancel(nx__link_t *link, int64_t task);

/* ---- http_server.c: answers --------------------------------------------------------------- */
/* Queue a JSON response (takes ownership of body); MHD_YES/MHD_NO as MHD wants. */
enum MHD_Result nx__http_json(struct MHD_Connection *c, unsigned status, json_t *body);
/* An OpenAI-shaped error {"error": {"message", "type", "code", "param": null}}. */
enum MHD_Result nx__http_error(struct MHD_Connection *c, unsigned status, const char *code,
                               const char *message);
/* The HTTP status for a protocol error code (schemas/protocol.md: Error codes). */
unsigned nx__http_status_for(const char *code);
/* The error reply the link holds, answered with its status (busy: Retry-After too). */
enum MHD_Result nx__http_proto_error(struct MHD_Connection *c, const nx__link_t *link);

/* nexus_http_requests_total{path,code} in Prometheus text. */
void nx__http_write_requests(nx_http_t *http, FILE *f);

/* ---- http_openai.c ------------------------------------------------------------------------ */
/* POST /v1/chat/completions and /v1/completions with the whole body read. */
enum MHD_Result nx__openai_create(nx_http_t *http, struct MHD_Connection *c, nx__api_t api,
                                  const char *body, size_t len);
/* GET /v1/models: the agents. */
enum MHD_Result nx__openai_models(nx_http_t *http, struct MHD_Connection *c);

/* ---- http_metrics.c ----------------------------------------------------------------------- */
/* GET /metrics. */
enum MHD_Result nx__metrics_get(nx_http_t *http, struct MHD_Connection *c);
/* Prometheus text from a `status` and a `metrics` reply (both msgpack maps), and the front's
 * own request counts when http is not NULL. Caller frees. */
char *nx__metrics_render(const msgpack_object *status, const msgpack_object *metrics,
                         nx_http_t *http);

#endif
