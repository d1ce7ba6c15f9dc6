/* conf.c — nexus.yaml (schemas/nexus.schema.json states the same rules), the agents folder it
 * names, and the rules that span files: unique agent names, `next` naming an agent and no
 * pipeline looping back on itself, every model folder present (hub names Org/Name[@REV] are
 * resolved as each agent file is read: conf_agent.c), CURVE when not on loopback.
 *
 * Every relative path, and every default path (home ./var, agents ./agents, models
 * <home>/models), resolves against the folder of nexus.yaml; the struct holds absolute paths.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conf.h"
#include "nx_engine.h"
#include "conf_yaml.h"
#include "grammar.h"

#define DEFAULT_LISTEN "tcp://127.0.0.1:5555"
#define DEFAULT_EVENTS "tcp://127.0.0.1:5556"
#define MAX_AGENT_FILES 4096

static const char *const nexus_keys[] = {"home",       "listen",     "events",
                                         "agents",     "models",     "device",
                                         "pool",       "host_cache", "max_message_bytes",
                                         "max_batch",  "context",    "curve",
                                         "send_hwm",   "max_message_hard_bytes",
                                         "http",       NULL};
static const char *const curve_keys[] = {"secret_key", "clients", NULL};
static const char *const http_keys[] = {"listen", "api_keys", "idle_timeout", "max_connections",
                                        NULL};
#define DEFAULT_HTTP_HOST "127.0.0.1"
#define DEFAULT_HTTP_PORT 8080
#define MAX_API_KEYS 64
#define MIN_API_KEY_CHARS 16

/* One agent while loading: its settings and where its cross-checked fields were written. */
typedef struct loaded_agent {
    nx_agent_conf_t conf;
    nx__agent_marks_t marks;
} loaded_agent_t;

/* ---- endpoints --------------------------------------------------------------------------------- */

bool nx_endpoint_is_loopback(const char *endpoint)
{
    if (!endpoint)
        return false;
    if (strncmp(endpoint, "ipc://", 6) == 0 || strncmp(endpoint, "inproc://", 9) == 0)
        return true;
    if (strncmp(endpoint, "tcp://", 6) != 0)
        return false;
    const char *host = endpoint + 6;
    const char *colon = strrchr(host, ':');
    if (!colon || strchr(host, ';')) /* "tcp://src;dst" binds a source address: not ours */
        return false;
    size_t n = (size_t)(colon - host);
    if ((n == 9 && strncmp(host, "localhost", 9) == 0) || (n == 5 && strncmp(host, "[::1]", 5) == 0))
        return true;
    /* 127.0.0.0/8: four dotted decimal parts, the first 127 */
    if (n < 9 || strncmp(host, "127.", 4) != 0)
        return false;
    int parts = 2, digits = 0; /* "127." was the first part; now in the second */
    for (const char *p = host + 4; p < colon; p++) {
        if (*p == '.') {
            if (digits == 0)
                return false;
            parts++;
            digits = 0;
        } else if (*p >= '0' && *p <= '9' && digits < 3) {
            digits++;
        } else {
            return false;
        }
    }
    return parts == 4 && digits > 0;
}

static bool endpoint_form_ok(const char *e)
{
    static const char *const schemes[] = {"tcp://", "ipc://", "inproc://"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(schemes[i]);
        if (strncmp(e, schemes[i], n) == 0 && e[n])
            return true;
    }
    return false;
}

/* ---- nexus.yaml -------------------------------------------------------------------------------- */

static int get_path(nx__yfile_t *f, yaml_node_t *map, const char *key, const char *field,
                    const char *base_dir, const char *fallback, char **out, nx_err_t *err)
{
    yaml_node_t *n = nx__ymap_get(f, map, key);
    char *text = NULL;
    if (n) {
        int rc = nx__yget_string(f, n, field, false, &text, err);
        if (rc != NX_OK)
            return rc;
    }
    *out = nx__conf_abspath(base_dir, text ? text : fallback);
    free(text);
    return *out ? NX_OK : nx_err_set(err, NX_ENOMEM, "%s: no memory", f->path);
}

static int get_endpoint(nx__yfile_t *f, yaml_node_t *root, const char *key, const char *fallback,
                        char **out, nx_err_t *err)
{
    yaml_node_t *n = nx__ymap_get(f, root, key);
    if (!n) {
        *out = strdup(fallback);
        return *out ? NX_OK : nx_err_set(err, NX_ENOMEM, "%s: no memory", f->path);
    }
    int rc = nx__yget_string(f, n, key, false, out, err);
    if (rc == NX_OK && !endpoint_form_ok(*out))
        rc = nx__yexpect(f, n, key, "a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH, inproc://NAME)",
                         err);
    return rc;
}

static int parse_curve(nx__yfile_t *f, yaml_node_t *root, nx_nexus_conf_t *c, nx_err_t *err)
{
    yaml_node_t *curve = nx__ymap_get(f, root, "curve");
    if (!curve)
        return NX_OK;
    int rc = nx__ymap_check(f, curve, "curve", curve_keys, curve_keys, err);
    if (rc == NX_OK)
        rc = get_path(f, curve, "secret_key", "curve.secret_key", f->dir, "", &c->curve_secret_key,
                      err);
    if (rc == NX_OK)
        rc = get_path(f, curve, "clients", "curve.clients", f->dir, "", &c->curve_clients, err);
    return rc;
}

bool nx_http_host_is_loopback(const char *host)
{
    if (!host)
        return false;
    if (strcmp(host, "::1") == 0)
        return true;
    char endpoint[96];
    if (snprintf(endpoint, sizeof endpoint, "tcp://%s:0", host) >= (int)sizeof endpoint)
        return false;
    return nx_endpoint_is_loopback(endpoint);
}

/* http.listen: "HOST:PORT" with HOST an IPv4 literal, localhost or [IPv6]; the port 0..65535
 * (0: any free port). The host is kept without brackets. */
static int parse_http_listen(nx__yfile_t *f, yaml_node_t *n, nx_nexus_conf_t *c, nx_err_t *err)
{
    static const char *const expected =
        "HOST:PORT (an IPv4 address, localhost or [IPv6], and a port 0..65535)";
    char *text = NULL;
    int rc = nx__yget_string(f, n, "http.listen", false, &text, err);
    if (rc != NX_OK)
        return rc;
    char *colon = strrchr(text, ':');
    char *host = text, *end = NULL;
    unsigned long port = 0;
    bool ok = colon && colon > text && colon[1];
    if (ok) {
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        ok = errno == 0 && *end == 0 && port <= 65535 && colon[1] >= '0' && colon[1] <= '9';
        *colon = 0;
    }
    if (ok && host[0] == '[') { /* [IPv6] */
        size_t len = strlen(host);
        ok = len > 2 && host[len - 1] == ']';
        host[len - 1] = 0;
        host++;
        unsigned char addr[16];
        ok = ok && inet_pton(AF_INET6, host, addr) == 1;
    } else if (ok) {
        unsigned char addr[4];
        ok = strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, addr) == 1;
    }
    if (ok && !(c->http_host = strdup(strcmp(host, "localhost") == 0 ? "127.0.0.1" : host)))
        rc = nx_err_set(err, NX_ENOMEM, "%s: no memory", f->path);
    else if (!ok)
        rc = nx__yexpect(f, n, "http.listen", expected, err);
    c->http_port = (uint16_t)port;
    free(text);
    return rc;
}

static int parse_api_keys(nx__yfile_t *f, yaml_node_t *n, nx_nexus_conf_t *c, nx_err_t *err)
{
    const char *field = "http.api_keys";
    if (n->type != YAML_SEQUENCE_NODE)
        return nx__yexpect(f, n, field, "a list of strings", err);
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count > MAX_API_KEYS)
        return nx__yerr(f, n, field, err, "expected at most %d keys, got %zu", MAX_API_KEYS,
                        count);
    if (!(c->http_api_keys = calloc(count + 1, sizeof *c->http_api_keys)))
        return nx_err_set(err, NX_ENOMEM, "%s: no memory", f->path);
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = yaml_document_get_node(&f->doc, n->data.sequence.items.start[i]);
        char item_field[64];
        snprintf(item_field, sizeof item_field, "%s[%zu]", field, i);
        int rc = nx__yget_string(f, item, item_field, false, &c->http_api_keys[i], err);
        if (rc != NX_OK)
            return rc;
        c->http_api_key_count = i + 1;
        size_t len = strlen(c->http_api_keys[i]);
        if (len < MIN_API_KEY_CHARS)
            return nx__yerr(f, item, item_field, err, "expected a key of at least %d "
                            "characters, got %zu", MIN_API_KEY_CHARS, len);
    }
    return NX_OK;
}

/* http: present means on. Off loopback it needs api_keys (README: OpenAI-compatible HTTP). */
static int parse_http(nx__yfile_t *f, yaml_node_t *root, nx_nexus_conf_t *c, nx_err_t *err)
{
    yaml_node_t *http = nx__ymap_get(f, root, "http"), *n;
    if (!http)
        return NX_OK;
    c->http_enabled = true;
    c->http_port = DEFAULT_HTTP_PORT;
    c->http_idle_timeout_s = 30;
    c->http_max_connections = 64;
    int rc = nx__ymap_check(f, http, "http", http_keys, NULL, err);
    uint64_t u;
    if (rc == NX_OK && (n = nx__ymap_get(f, http, "listen")))
        rc = parse_http_listen(f, n, c, err);
    else if (rc == NX_OK && !(c->http_host = strdup(DEFAULT_HTTP_HOST)))
        rc = nx_err_set(err, NX_ENOMEM, "%s: no memory", f->path);
    if (rc == NX_OK && (n = nx__ymap_get(f, http, "api_keys")))
        rc = parse_api_keys(f, n, c, err);
    if (rc == NX_OK && (n = nx__ymap_get(f, http, "idle_timeout")) &&
        (rc = nx__yget_duration(f, n, "http.idle_timeout", 1, 3600, &u, err)) == NX_OK)
        c->http_idle_timeout_s = (uint32_t)u;
    if (rc == NX_OK && (n = nx__ymap_get(f, http, "max_connections")) &&
        (rc = nx__yget_u64(f, n, "http.max_connections", 1, 10000, &u, err)) == NX_OK)
        c->http_max_connections = (uint32_t)u;
    if (rc == NX_OK && !nx_http_host_is_loopback(c->http_host) && c->http_api_key_count == 0) {
        n = nx__ymap_get(f, http, "listen");
        rc = nx__yerr(f, n ? n : http, "http.listen", err,
                      "'%s' is not a loopback address, so http.api_keys is required",
                      c->http_host);
    }
    return rc;
}

/* Binding anywhere but loopback needs CURVE keys (README: Security). */
static int check_exposure(nx__yfile_t *f, yaml_node_t *root, const nx_nexus_conf_t *c,
                          nx_err_t *err)
{
    const char *keys[] = {"listen", "events"};
    const char *values[] = {c->listen, c->events};
    for (int i = 0; i < 2; i++) {
        if (nx_endpoint_is_loopback(values[i]) || c->curve_secret_key)
            continue;
        yaml_node_t *n = nx__ymap_get(f, root, keys[i]);
        return nx__yerr(f, n ? n : root, keys[i], err,
                        "'%s' is not a loopback address, so curve.secret_key and curve.clients "
                        "are required",
                        values[i]);
    }
    return NX_OK;
}

static int parse_numbers(nx__yfile_t *f, yaml_node_t *root, nx_nexus_conf_t *c, nx_err_t *err)
{
    yaml_node_t *n;
    int rc = NX_OK;
    uint64_t u;
    char *device = NULL;
    if ((n = nx__ymap_get(f, root, "device")) &&
        (rc = nx__yget_string(f, n, "device", false, &device, err)) == NX_OK &&
        !nx_device_parse(device, &c->device))
        rc = nx__yexpect(f, n, "device", "one of auto, cuda, cpu", err);
    free(device);
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "pool")))
        rc = nx__yget_size(f, n, "pool", 1, UINT64_MAX, &c->pool_bytes, &c->pool_fraction, err);
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "host_cache")))
        rc = nx__yget_size(f, n, "host_cache", 0, UINT64_MAX, &c->host_cache_bytes, NULL, err);
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "max_message_bytes")) &&
        (rc = nx__yget_size(f, n, "max_message_bytes", 1024, 1ull << 30, &u, NULL, err)) == NX_OK)
        c->max_message_bytes = (uint32_t)u;
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "max_message_hard_bytes"))) {
        rc = nx__yget_size(f, n, "max_message_hard_bytes", 1024, 1ull << 32,
                           &c->max_message_hard_bytes, NULL, err);
        if (rc == NX_OK && c->max_message_hard_bytes < c->max_message_bytes)
            rc = nx__yerr(f, n, "max_message_hard_bytes", err,
                          "expected at least max_message_bytes (%u bytes), got %llu bytes",
                          c->max_message_bytes,
                          (unsigned long long)c->max_message_hard_bytes);
    } else if (rc == NX_OK && c->max_message_hard_bytes < c->max_message_bytes) {
        c->max_message_hard_bytes = c->max_message_bytes; /* the default yields to it */
    }
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "send_hwm")) &&
        (rc = nx__yget_u64(f, n, "send_hwm", 1, 10000000, &u, err)) == NX_OK)
        c->send_hwm = (uint32_t)u;
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "max_batch")) &&
        (rc = nx__yget_u64(f, n, "max_batch", 1, 1024, &u, err)) == NX_OK)
        c->max_batch = (uint32_t)u;
    if (rc == NX_OK && (n = nx__ymap_get(f, root, "context")) &&
        (rc = nx__yget_u64(f, n, "context", 16, 1048576, &u, err)) == NX_OK)
        c->context = (uint32_t)u;
    return rc;
}

static int parse_nexus(nx__yfile_t *f, nx_nexus_conf_t *c, nx_err_t *err)
{
    yaml_node_t *root = nx__yfile_root(f);
    c->device = NX_DEVICE_AUTO;
    c->pool_fraction = 0.8;
    c->max_message_bytes = 1u << 20;
    c->max_message_hard_bytes = 64ull << 20;
    c->send_hwm = 100000;
    c->max_batch = 16;
    c->context = 2048;
    int rc = nx__ymap_check(f, root, "", nexus_keys, NULL, err);
    if (rc == NX_OK)
        rc = get_path(f, root, "home", "home", f->dir, "var", &c->home, err);
    if (rc == NX_OK)
        rc = get_path(f, root, "agents", "agents", f->dir, "agents", &c->agents_dir, err);
    if (rc == NX_OK)
        rc = get_path(f, root, "models", "models", f->dir, "models", &c->models_dir, err);
    if (rc == NX_OK && !nx__ymap_get(f, root, "models")) { /* default: <home>/models */
        free(c->models_dir);
        c->models_dir = nx__conf_abspath(c->home, "models");
        if (!c->models_dir)
            rc = nx_err_set(err, NX_ENOMEM, "%s: no memory", f->path);
    }
    if (rc == NX_OK)
        rc = get_endpoint(f, root, "listen", DEFAULT_LISTEN, &c->listen, err);
    if (rc == NX_OK)
        rc = get_endpoint(f, root, "events", DEFAULT_EVENTS, &c->events, err);
    if (rc == NX_OK)
        rc = parse_numbers(f, root, c, err);
    if (rc == NX_OK)
        rc = parse_curve(f, root, c, err);
    if (rc == NX_OK)
        rc = check_exposure(f, root, c, err);
    if (rc == NX_OK)
        rc = parse_http(f, root, c, err);
    return rc;
}

/* ---- the agents folder ------------------------------------------------------------------------- */

static bool is_yaml_name(const char *name)
{
    size_t n = strlen(name);
    if (name[0] == '.')
        return false;
    return (n > 5 && strcmp(name + n - 5, ".yaml") == 0) ||
           (n > 4 && strcmp(name + n - 4, ".yml") == 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The folder's *.yaml / *.yml names, sorted (so the first error reported is stable). */
static int list_agent_files(const char *dir, char ***names_out, size_t *count_out, nx_err_t *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return nx_err_set(err, errno == ENOENT ? NX_ENOTFOUND : NX_EIO,
                          "agents folder '%s': cannot open: %s", dir, strerror(errno));
    char **names = calloc(MAX_AGENT_FILES, sizeof *names);
    size_t count = 0;
    int rc = names ? NX_OK : nx_err_set(err, NX_ENOMEM, "agents folder '%s': no memory", dir);
    for (struct dirent *e; rc == NX_OK && (e = readdir(d));) {
        if (!is_yaml_name(e->d_name))
            continue;
        if (count == MAX_AGENT_FILES)
            rc = nx_err_set(err, NX_EFORMAT, "agents folder '%s': more than %d agent files", dir,
                            MAX_AGENT_FILES);
        else if (!(names[count++] = nx__conf_abspath(dir, e->d_name)))
            rc = nx_err_set(err, NX_ENOMEM, "agents folder '%s': no memory", dir);
    }
    closedir(d);
    if (rc == NX_OK)
        qsort(names, count, sizeof *names, cmp_str);
    *names_out = names;
    *count_out = count;
    return rc;
}

static int load_agent_file(const char *path, const char *models_dir, loaded_agent_t *out,
                           nx_err_t *err)
{
    nx__yfile_t f;
    int rc = nx__yfile_open(&f, path, err);
    if (rc == NX_OK)
        rc = nx__agent_parse(&f, models_dir, &out->conf, &out->marks, err);
    nx__yfile_close(&f);
    return rc;
}

static int cmp_agent(const void *a, const void *b)
{
    return strcmp(((const loaded_agent_t *)a)->conf.name, ((const loaded_agent_t *)b)->conf.name);
}

static int mark_err(int code, const loaded_agent_t *a, yaml_mark_t m, const char *field,
                    nx_err_t *err, const char *what, const char *detail)
{
    return nx_err_set(err, code, "%s:%zu:%zu: field '%s': %s%s", a->conf.source_path,
                      m.line + 1, m.column + 1, field, what, detail);
}

static const loaded_agent_t *find_loaded(const loaded_agent_t *agents, size_t n, const char *name)
{
    loaded_agent_t key = {.conf = {.name = (char *)name}};
    return bsearch(&key, agents, n, sizeof *agents, cmp_agent);
}

/* A typed pipeline: when the `next` stage has an input_schema, every answer of `a` (its
 * output_schema; free text never fits) must be valid under it (nx_gram_schema_compat, a
 * sound check: what it cannot prove is refused, with the reason). */
static int check_fit(const loaded_agent_t *a, const loaded_agent_t *b, nx_err_t *err)
{
    if (!b->conf.input_schema)
        return NX_OK;
    nx_err_t why = {0};
    const char *out = a->conf.output_schema;
    nx_gram_schema_opts_t opts = {.strict = a->conf.output_strict};
    int rc = nx_gram_schema_compat(out, out ? strlen(out) : 0, b->conf.input_schema,
                                   strlen(b->conf.input_schema), &opts, &why);
    if (rc == NX_OK)
        return NX_OK;
    if (rc == NX_ENOMEM)
        return nx_err_set(err, rc, "%s", why.msg);
    char detail[1400];
    if (!out)
        snprintf(detail, sizeof detail,
                 "'%s' answers free text (no output_schema), and '%s' takes only JSON valid "
                 "under its input_schema", a->conf.name, b->conf.name);
    else
        snprintf(detail, sizeof detail, "'%s' output_schema does not fit '%s' input_schema: %s",
                 a->conf.name, b->conf.name, why.msg);
    return mark_err(NX_EFORMAT, a, a->marks.next, "next", err,
                    "the pipeline's types do not fit: ", detail);
}

/* `next` must name an agent and following it must not come back (a pipeline that loops). */
static int check_next(const loaded_agent_t *agents, size_t n, const loaded_agent_t *a,
                      nx_err_t *err)
{
    if (!a->conf.next)
        return NX_OK;
    if (!find_loaded(agents, n, a->conf.next)) {
        char detail[600];
        snprintf(detail, sizeof detail, "'%s' (no agent has that name)", a->conf.next);
        return mark_err(NX_EFORMAT, a, a->marks.next, "next", err, "expected the name of an agent, got ",
                        detail);
    }
    int rc = check_fit(a, find_loaded(agents, n, a->conf.next), err);
    if (rc != NX_OK)
        return rc;
    char chain[600];
    size_t used = (size_t)snprintf(chain, sizeof chain, "%s", a->conf.name);
    const loaded_agent_t *at = a;
    for (size_t steps = 0; at->conf.next && steps < n; steps++) {
        at = find_loaded(agents, n, at->conf.next);
        if (!at)
            return NX_OK; /* reported when that agent is checked */
        if (used < sizeof chain)
            used += (size_t)snprintf(chain + used, sizeof chain - used, " -> %s", at->conf.name);
        if (at == a)
            return mark_err(NX_EFORMAT, a, a->marks.next, "next", err,
                            "the pipeline loops back to this agent: ", chain);
    }
    return NX_OK;
}

/* Whether following tools: lists from `from` reaches `target` (depth-first, each agent once);
 * the path is appended to chain. */
static bool tools_reach(const loaded_agent_t *agents, size_t n, const loaded_agent_t *from,
                        const loaded_agent_t *target, bool *seen, char *chain, size_t cap)
{
    if (seen[from - agents])
        return false;
    seen[from - agents] = true;
    for (size_t i = 0; i < from->conf.tool_count; i++) {
        const loaded_agent_t *t = find_loaded(agents, n, from->conf.tools[i]);
        if (!t)
            continue;
        size_t used = strlen(chain);
        snprintf(chain + used, cap - used, " -> %s", t->conf.name);
        if (t == target || tools_reach(agents, n, t, target, seen, chain, cap))
            return true;
        chain[used] = '\0';
    }
    return false;
}

/* tools: entries must name other agents, and calling them must not come back to this one
 * (a child task calling its caller would never end), at the entry's FILE:LINE:COL. */
static int check_tools(const loaded_agent_t *agents, size_t n, const loaded_agent_t *a,
                       nx_err_t *err)
{
    for (size_t i = 0; i < a->conf.tool_count; i++) {
        char field[32], detail[700];
        snprintf(field, sizeof field, "tools[%zu]", i);
        const loaded_agent_t *t = find_loaded(agents, n, a->conf.tools[i]);
        if (!t) {
            snprintf(detail, sizeof detail, "'%s' (no agent has that name)", a->conf.tools[i]);
            return mark_err(NX_EFORMAT, a, a->marks.tools[i], field, err,
                            "expected the name of an agent, got ", detail);
        }
        if (t == a)
            return mark_err(NX_EFORMAT, a, a->marks.tools[i], field, err,
                            "an agent cannot call itself as a tool: ", a->conf.name);
        bool *seen = calloc(n, sizeof *seen);
        if (!seen)
            return nx_err_set(err, NX_ENOMEM, "no memory checking tools");
        snprintf(detail, sizeof detail, "%s -> %s", a->conf.name, t->conf.name);
        bool loops = tools_reach(agents, n, t, a, seen, detail, sizeof detail);
        free(seen);
        if (loops)
            return mark_err(NX_EFORMAT, a, a->marks.tools[i], field, err,
                            "the tool calls loop back to this agent: ", detail);
    }
    return NX_OK;
}

static int check_agents(const loaded_agent_t *agents, size_t n, nx_err_t *err)
{
    for (size_t i = 0; i + 1 < n; i++) {
        const loaded_agent_t *a = &agents[i], *b = &agents[i + 1];
        if (strcmp(a->conf.name, b->conf.name) == 0)
            return nx_err_set(err, NX_EEXIST,
                              "%s:%zu:%zu: field 'name': agent '%s' is also defined in %s:%zu:%zu",
                              b->conf.source_path, b->marks.name.line + 1,
                              b->marks.name.column + 1, b->conf.name, a->conf.source_path,
                              a->marks.name.line + 1, a->marks.name.column + 1);
    }
    for (size_t i = 0; i < n; i++) {
        const loaded_agent_t *a = &agents[i];
        struct stat st;
        bool exists = stat(a->conf.model_path, &st) == 0;
        if (!exists || !(S_ISDIR(st.st_mode) || nx_path_is_gguf(a->conf.model_path))) {
            char detail[600];
            snprintf(detail, sizeof detail, exists ? "'%s' is neither a directory nor a GGUF file"
                                                   : "'%s' does not exist",
                     a->conf.model_path);
            return mark_err(NX_ENOTFOUND, a, a->marks.model, "model", err, "the model ",
                            detail);
        }
        int rc = check_next(agents, n, a, err);
        if (rc == NX_OK)
            rc = check_tools(agents, n, a, err);
        if (rc != NX_OK)
            return rc;
    }
    return NX_OK;
}

static int load_agents(nx_nexus_conf_t *c, nx_err_t *err)
{
    char **names = NULL;
    size_t count = 0;
    loaded_agent_t *agents = NULL;
    int rc = list_agent_files(c->agents_dir, &names, &count, err);
    if (rc == NX_OK && count && !(agents = calloc(count, sizeof *agents)))
        rc = nx_err_set(err, NX_ENOMEM, "agents folder '%s': no memory", c->agents_dir);
    size_t loaded = 0;
    for (; rc == NX_OK && loaded < count; loaded++)
        rc = load_agent_file(names[loaded], c->models_dir, &agents[loaded], err);
    if (rc == NX_OK && count) { /* an empty folder: nothing to sort (qsort wants an array) */
        qsort(agents, count, sizeof *agents, cmp_agent);
        rc = check_agents(agents, count, err);
    }
    if (rc == NX_OK && count && !(c->agents = calloc(count, sizeof *c->agents)))
        rc = nx_err_set(err, NX_ENOMEM, "agents folder '%s': no memory", c->agents_dir);
    for (size_t i = 0; i < loaded; i++) {
        if (rc == NX_OK)
            c->agents[i] = agents[i].conf; /* moves the strings */
        else
            nx__agent_clear(&agents[i].conf);
    }
    if (rc == NX_OK)
        c->agent_count = count;
    for (size_t i = 0; names && i < count; i++)
        free(names[i]);
    free(names);
    free(agents);
    return rc;
}

/* ---- public ------------------------------------------------------------------------------------ */

static int conf_read(const char *path, bool with_agents, nx_nexus_conf_t **out, nx_err_t *err)
{
    *out = NULL;
    nx_nexus_conf_t *c = calloc(1, sizeof *c);
    if (!c)
        return nx_err_set(err, NX_ENOMEM, "%s: no memory", path);
    nx__yfile_t f;
    int rc = nx__yfile_open(&f, path, err);
    if (rc == NX_OK && !(c->source_path = strdup(path)))
        rc = nx_err_set(err, NX_ENOMEM, "%s: no memory", path);
    if (rc == NX_OK)
        rc = parse_nexus(&f, c, err);
    nx__yfile_close(&f);
    if (rc == NX_OK && with_agents)
        rc = load_agents(c, err);
    if (rc != NX_OK) {
        nx_nexus_conf_free(&c);
        return rc;
    }
    *out = c;
    return NX_OK;
}

int nx_nexus_conf_load(const char *path, nx_nexus_conf_t **out, nx_err_t *err)
{
    return conf_read(path, true, out, err);
}

int nx_nexus_conf_read(const char *path, nx_nexus_conf_t **out, nx_err_t *err)
{
    return conf_read(path, false, out, err);
}

void nx_nexus_conf_free(nx_nexus_conf_t **conf_p)
{
    nx_nexus_conf_t *c = *conf_p;
    if (!c)
        return;
    for (size_t i = 0; i < c->agent_count; i++)
        nx__agent_clear(&c->agents[i]);
    free(c->agents);
    free(c->source_path);
    free(c->home);
    free(c->listen);
    free(c->events);
    free(c->agents_dir);
    free(c->models_dir);
    free(c->curve_secret_key);
    free(c->curve_clients);
    free(c->http_host);
    for (size_t i = 0; c->http_api_keys && c->http_api_keys[i]; i++)
        free(c->http_api_keys[i]);
    free(c->http_api_keys);
    free(c);
    *conf_p = NULL;
}

const nx_agent_conf_t *nx_nexus_conf_agent(const nx_nexus_conf_t *conf, const char *name)
{
    if (!conf || !name)
        return NULL;
    for (size_t i = 0; i < conf->agent_count; i++)
        if (strcmp(conf->agents[i].name, name) == 0)
            return &conf->agents[i];
    return NULL;
}
