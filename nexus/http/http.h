/* http.h — nexusd's OpenAI-compatible HTTP front (README: OpenAI-compatible HTTP):
 * POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /metrics (Prometheus
 * text), GET /health. A front translates, it never decides: each request becomes the same
 * msgpack request a ZeroMQ client would send, over a DEALER connected to the router's own
 * ROUTER socket at an inproc:// endpoint (same checks, same store rows, same scheduling, same
 * error codes; a task can be cancelled only by the connection that sent it).
 *
 * Threads: libmicrohttpd's listening thread and one thread per connection (at most
 * http.max_connections); each request opens its own DEALER (inproc connects cost
 * microseconds) so a request's replies and its cancel need no demultiplexing. */
#ifndef NX_HTTP_H
#define NX_HTTP_H

#include <stdint.h>

#include "conf.h"
#include "nx_err.h"

typedef struct nx_http nx_http_t;

/* Start serving conf->http_host:http_port (conf->http_enabled must be set), talking to the
 * router at `router_endpoint` (an inproc:// endpoint the router's socket is bound to). conf
 * is borrowed and must outlive the front. NX_EIO when the address cannot be bound. */
nx_http_t *nx_http_new(const nx_nexus_conf_t *conf, const char *router_endpoint, nx_err_t *err);
/* The port it listens on (the one chosen when http.listen's port is 0). */
uint16_t nx_http_port(const nx_http_t *self);
/* The daemon is stopping: new requests are answered 503 shutting_down; requests already
 * waiting still get their replies (the router answers them while it drains). */
void nx_http_quiesce(nx_http_t *self);
/* Stop: requests still waiting are answered 503, connections closed, threads joined. */
void nx_http_destroy(nx_http_t **self_p);

#endif
