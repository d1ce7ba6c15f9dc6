/* http_server.c — the HTTP front's server: libmicrohttpd with one thread per connection (a
 * request blocks on the router for as long as its task runs, and a stream's content reader
 * blocks for its next token), routing, the limits that keep malformed or slow clients from
 * doing harm, bearer-key authentication, and the shapes of answers and errors.
 *
 * Limits: headers fit in 64 KiB (MHD_OPTION_CONNECTION_MEMORY_LIMIT; past it libmicrohttpd
 * answers 431 and closes); a body is at most max_message_bytes (413 too_large, before reading
 * it when Content-Length says so); a connection idle for http.idle_timeout closes (slow
 * clients: headers or body trickled byte by byte); at most http.max_connections at once. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <zmq.h>

#include <czmq.h>

#include "http_int.h"
#include "nx_err.h"

#define HEADER_MEMORY_BYTES (64 * 1024)

typedef enum route {
    ROUTE_NONE = 0,
    ROUTE_HEALTH,
    ROUTE_METRICS,
    ROUTE_MODELS,
    ROUTE_CHAT,
    ROUTE_COMPLETIONS,
} route_t;

static const struct {
    const char *path;
    route_t route;
    bool post; /* else GET (and HEAD) */
} routes[] = {
    {"/health", ROUTE_HEALTH, false},
    {"/metrics", ROUTE_METRICS, false},
    {"/v1/models", ROUTE_MODELS, false},
    {"/v1/chat/completions", ROUTE_CHAT, true},
    {"/v1/completions", ROUTE_COMPLETIONS, true},
};

static const unsigned statuses[NX__HTTP_STATUSES] = {200, 400, 401, 404, 405, 413, 429,
                                                      500, 503, 504, 507, 431, 0 /* other */};

void nx__http_write_requests(nx_http_t *http, FILE *f)
{
    fputs("# HELP nexus_http_requests_total HTTP requests answered, by path and status.\n"
          "# TYPE nexus_http_requests_total counter\n", f);
    for (size_t r = 0; r < NX__HTTP_ROUTES; r++) {
        const char *path = "other";
        for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
            if ((size_t)routes[i].route == r)
                path = routes[i].path;
        for (size_t k = 0; k < NX__HTTP_STATUSES; k++) {
            uint64_t n = atomic_load(&http->requests[r][k]);
            if (n == 0)
                continue; /* the families stay small: only what happened */
            if (statuses[k])
                fprintf(f, "nexus_http_requests_total{path=\"%s\",code=\"%u\"} %llu\n", path,
                        statuses[k], (unsigned long long)n);
            else
                fprintf(f, "nexus_http_requests_total{path=\"%s\",code=\"other\"} %llu\n",
                        path, (unsigned long long)n);
        }
    }
}

/* One request being read: its route and body so far. */
typedef struct req {
    route_t route;
    bool answered; /* a response was queued before the body was read */
    bool too_large;
    char *body;
    size_t len, cap;
} req_t;

/* ------------------------------------------------------------------------------------------
 * Answers
 */
static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, char *text,
                             const char *type)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_TOO_MANY_REQUESTS || status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result nx__http_json(struct MHD_Connection *c, unsigned status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return MHD_NO; /* out of memory: closing the connection is the answer */
    return queue(c, status, text, "application/json");
}

static const char *error_type(unsigned status)
{
    if (status == MHD_HTTP_UNAUTHORIZED)
        return "authentication_error";
    if (status == MHD_HTTP_TOO_MANY_REQUESTS)
        return "rate_limit_error";
    if (status == MHD_HTTP_NOT_FOUND)
        return "not_found_error";
    return status >= 500 ? "server_error" : "invalid_request_error";
}

enum MHD_Result nx__http_error(struct MHD_Connection *c, unsigned status, const char *code,
                               const char *message)
{
    json_t *body = json_pack("{s:{s:s, s:s, s:s, s:n}}", "error", "message", message, "type",
                             error_type(status), "code", code, "param");
    return nx__http_json(c, status, body);
}

unsigned nx__http_status_for(const char *code)
{
    static const struct {
        const char *code;
        unsigned status;
    } map[] = {
        {"bad_msgpack", 400},   {"unknown_op", 400},    {"bad_request", 400},
        {"context_full", 400},  {"too_large", 413},     {"unknown_agent", 404},
        {"unknown_model", 404}, {"not_found", 404},     {"busy", 429},
        {"timeout", 504},       {"canceled", 409},      {"model_error", 500},
        {"shutting_down", 503}, {"storage_full", 507},  {"storage_error", 500},
        {"internal", 500},      {"incomplete", 500},
    };
    for (size_t i = 0; code && i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].code, code) == 0)
            return map[i].status;
    return 500;
}

enum MHD_Result nx__http_proto_error(struct MHD_Connection *c, const nx__link_t *link)
{
    char *code = nx__mp_strdup(nx__link_get(link, "code"));
    char *message = nx__mp_strdup(nx__link_get(link, "message"));
    enum MHD_Result ret = nx__http_error(c, nx__http_status_for(code), code ? code : "internal",
                                         message ? message : "the request failed");
    free(code);
    free(message);
    return ret;
}

/* ------------------------------------------------------------------------------------------
 * Checks before the body
 */
/* Authorization: Bearer KEY, KEY one of http.api_keys; compared in time that does not depend
 * on where a guess first differs. */
static bool authorized(nx_http_t *http, struct MHD_Connection *c)
{
    if (http->conf->http_api_key_count == 0)
        return true;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    const char *given = auth + 7;
    size_t given_len = strlen(given);
    bool ok = false;
    for (size_t k = 0; k < http->conf->http_api_key_count; k++) {
        const char *key = http->conf->http_api_keys[k];
        size_t key_len = strlen(key);
        unsigned char diff = given_len != key_len;
        for (size_t i = 0; i < key_len; i++)
            diff |= (unsigned char)key[i] ^ (unsigned char)(i < given_len ? given[i] : 0);
        ok |= diff == 0;
    }
    return ok;
}

static enum MHD_Result check_first(nx_http_t *http, struct MHD_Connection *c, req_t *r,
                                   const char *url, const char *method)
{
    bool is_post = strcmp(method, "POST") == 0;
    bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    size_t i, n = sizeof routes / sizeof routes[0];
    for (i = 0; i < n && strcmp(routes[i].path, url) != 0; i++)
        ;
    r->answered = true; /* unless every check passes */
    if (i == n)
        return nx__http_error(c, MHD_HTTP_NOT_FOUND, "not_found", "no such path");
    r->route = routes[i].route; /* counted under its path whatever the answer */
    if (routes[i].post ? !is_post : !is_get) {
        char message[96];
        snprintf(message, sizeof message, "%s takes %s", routes[i].path,
                 routes[i].post ? "POST" : "GET");
        json_t *body = json_pack("{s:{s:s, s:s, s:s, s:n}}", "error", "message", message,
                                 "type", "invalid_request_error", "code", "method_not_allowed",
                                 "param");
        char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        struct MHD_Response *resp =
            text ? MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE)
                 : NULL;
        if (!resp) {
            free(text);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, routes[i].post ? "POST" : "GET, HEAD");
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_METHOD_NOT_ALLOWED, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    if (routes[i].route != ROUTE_HEALTH && !authorized(http, c))
        return nx__http_error(c, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                              "an API key is required: Authorization: Bearer KEY");
    if (atomic_load(&http->refusing))
        return nx__http_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                              "the daemon is stopping");
    const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (length && strtoull(length, NULL, 10) > http->conf->max_message_bytes) {
        char message[128];
        snprintf(message, sizeof message, "the body is %.20s bytes, over max_message_bytes %u",
                 length, http->conf->max_message_bytes);
        return nx__http_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", message);
    }
    r->answered = false;
    return MHD_YES;
}

static enum MHD_Result take_body(nx_http_t *http, req_t *r, const char *data, size_t size)
{
    size_t cap = http->conf->max_message_bytes;
    if (r->too_large || r->answered || size > cap - r->len) {
        r->too_large = !r->answered;
        return MHD_YES; /* read and dropped: the answer comes at the end */
    }
    if (r->len + size + 1 > r->cap) {
        size_t grown_cap = (r->len + size + 1) * 2;
        if (grown_cap > cap + 1)
            grown_cap = cap + 1;
        char *grown = realloc(r->body, grown_cap);
        if (!grown)
            return MHD_NO;
        r->body = grown;
        r->cap = grown_cap;
    }
    memcpy(r->body + r->len, data, size);
    r->len += size;
    r->body[r->len] = 0;
    return MHD_YES;
}

/* GET /health: 200 when the router answers a ping within 2 s, else 503. */
static enum MHD_Result health(nx_http_t *http, struct MHD_Connection *c)
{
    nx__link_t link;
    bool ok = nx__link_open(&link, http, -1) == NX_OK &&
              nx__link_call(&link, "ping", 2000) == NX__WAIT_OK && nx__link_op_is(&link, "pong");
    nx__link_close(&link);
    if (!ok)
        return nx__http_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                              "the router did not answer");
    return nx__http_json(c, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    nx_http_t *http = cls;
    req_t *r = *con_cls;
    if (!r) {
        if (!(r = calloc(1, sizeof *r)))
            return MHD_NO;
        *con_cls = r;
        atomic_fetch_add(&http->active, 1);
        return check_first(http, c, r, url, method);
    }
    if (*upload_size) {
        enum MHD_Result ret = take_body(http, r, upload_data, *upload_size);
        *upload_size = 0;
        return ret;
    }
    if (r->answered)
        return MHD_YES;
    r->answered = true;
    if (r->too_large) {
        char message[96];
        snprintf(message, sizeof message, "the body is over max_message_bytes %u",
                 http->conf->max_message_bytes);
        return nx__http_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", message);
    }
    switch (r->route) {
    case ROUTE_HEALTH:
        return health(http, c);
    case ROUTE_METRICS:
        return nx__metrics_get(http, c);
    case ROUTE_MODELS:
        return nx__openai_models(http, c);
    case ROUTE_CHAT:
        return nx__openai_create(http, c, NX__API_CHAT, r->body ? r->body : "", r->len);
    case ROUTE_COMPLETIONS:
        return nx__openai_create(http, c, NX__API_COMPLETIONS, r->body ? r->body : "", r->len);
    default:
        return MHD_NO;
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    nx_http_t *http = cls;
    req_t *r = *con_cls;
    if (r) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_HTTP_STATUS);
        unsigned status = info ? info->http_status : 0;
        size_t k = 0;
        while (k + 1 < NX__HTTP_STATUSES && statuses[k] != status)
            k++;
        if (status) /* 0: nothing was answered (the client left first) */
            atomic_fetch_add(&http->requests[r->route][k], 1);
        free(r->body);
        free(r);
        atomic_fetch_sub(&http->active, 1);
    }
    *con_cls = NULL;
}

/* ------------------------------------------------------------------------------------------
 * Start and stop
 */
nx_http_t *nx_http_new(const nx_nexus_conf_t *conf, const char *router_endpoint, nx_err_t *err)
{
    nx_http_t *self = calloc(1, sizeof *self);
    if (!self || !(self->endpoint = strdup(router_endpoint))) {
        free(self);
        nx_err_set(err, NX_ENOMEM, "http: out of memory");
        return NULL;
    }
    self->conf = conf;
    self->started_s = (int64_t)time(NULL);
    self->zmq_ctx = zsys_init(); /* czmq's context: the router's socket lives in it */
    struct sockaddr_storage addr = {0};
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                         MHD_USE_POLL;
    if (strchr(conf->http_host, ':')) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(conf->http_port);
        inet_pton(AF_INET6, conf->http_host, &a6->sin6_addr);
        flags |= MHD_USE_IPv6;
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
        a4->sin_family = AF_INET;
        a4->sin_port = htons(conf->http_port);
        inet_pton(AF_INET, conf->http_host, &a4->sin_addr);
    }
    self->mhd = MHD_start_daemon(
        flags, conf->http_port, NULL, NULL, on_request, self, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)conf->http_idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HEADER_MEMORY_BYTES,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)conf->http_max_connections,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, self, MHD_OPTION_END);
    if (!self->mhd) {
        nx_err_set(err, NX_EIO, "%s: http.listen '%s:%u': cannot listen there (in use, or not "
                   "an address of this machine)", conf->source_path, conf->http_host,
                   conf->http_port);
        free(self->endpoint);
        free(self);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->mhd, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info ? info->port : conf->http_port;
    return self;
}

uint16_t nx_http_port(const nx_http_t *self)
{
    return self->port;
}

void nx_http_quiesce(nx_http_t *self)
{
    if (self)
        atomic_store(&self->refusing, true);
}

void nx_http_destroy(nx_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nx_http_t *self = *self_p;
    atomic_store(&self->refusing, true);
    atomic_store(&self->stopping, true); /* requests still waiting answer 503 within 100 ms */
    /* Let the answers already queued (the router's last results, those 503s) be written
     * before libmicrohttpd closes the connections: up to 2 s. */
    for (int i = 0; i < 200 && atomic_load(&self->active) > 0; i++)
        poll(NULL, 0, 10);
    MHD_stop_daemon(self->mhd); /* joins every connection's thread */
    free(self->endpoint);
    free(self);
    *self_p = NULL;
}
